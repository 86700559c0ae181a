"""Load generation, metrics, the matrix runner, ranking, reports, and the ``alertbench`` CLI."""
