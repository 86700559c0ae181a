"""Transports: one module per transport behind one interface. They move opaque bytes only."""
