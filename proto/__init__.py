"""Package data: the project's .proto files (read through importlib.resources)."""
