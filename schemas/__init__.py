"""Package data: schema documents and generated schemas (read through importlib.resources)."""
