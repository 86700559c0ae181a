"""The Rubin alert model: the official schema, typed records, the simulator and its cutouts."""
