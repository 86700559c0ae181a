"""Build Python modules from the project's .proto files with grpcio-tools, once, into the cache.

Generated code is never committed or edited: it is rebuilt whenever the .proto's content changes
(the output folder is keyed by its hash) and imported from there under a private name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from alertbench.resources import cache_dir


def _import(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build(source: Path, grpc: bool = False) -> tuple[ModuleType, ModuleType | None]:
    """(messages module, gRPC stubs module or None) for ``source``."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    out = cache_dir() / f"proto-py-{digest}"
    stem = source.stem
    pb2, pb2_grpc = out / f"{stem}_pb2.py", out / f"{stem}_pb2_grpc.py"
    if not pb2.exists() or (grpc and not pb2_grpc.exists()):
        from grpc_tools import protoc  # build-time tool, imported only when building

        out.mkdir(parents=True, exist_ok=True)
        args = ["protoc", f"-I{source.parent}", f"--python_out={out}"]
        if grpc:
            args.append(f"--grpc_python_out={out}")
        code = protoc.main([*args, str(source)])
        if code != 0 or not pb2.exists():
            raise RuntimeError(f"protoc failed ({code}) building {source}")
    # The gRPC module imports "<stem>_pb2" by its plain name: register the messages under it.
    messages = _import(f"{stem}_pb2", pb2)
    stubs = _import(f"{stem}_pb2_grpc", pb2_grpc) if grpc else None
    return messages, stubs
