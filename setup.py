"""Build step that setuptools cannot declare: compile the committed .proto files with protoc.

Stubs are generated at build time (wheel, sdist build or editable install), never at import, so
``import alertbench.transports.grpc`` and ``alertbench --help`` run no compiler. Each .proto is
compiled from a copy placed at its package path, so the gRPC stubs import their messages as
``alertbench.…._generated.X_pb2`` instead of a bare top-level name.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
STUBS = (
    # (.proto in proto/, folder the stubs go to, package of that folder, with gRPC services)
    ("alertstream.proto", "transports/_generated", "alertbench/transports/_generated", True),
    ("lsst_alert_v11_1.proto", "refimpl/codecs/_generated", "alertbench/refimpl/codecs/_generated",
     False),
)  # fmt: skip


def generate_stubs() -> None:
    from grpc_tools import protoc  # a build requirement (pyproject.toml)

    for proto, out_dir, package_path, with_grpc in STUBS:
        with tempfile.TemporaryDirectory() as tmp:
            staged = Path(tmp) / package_path / proto
            staged.parent.mkdir(parents=True)
            shutil.copy(ROOT / "proto" / proto, staged)
            args = ["protoc", f"-I{tmp}", f"--python_out={tmp}"]
            if with_grpc:
                args.append(f"--grpc_python_out={tmp}")
            if protoc.main([*args, str(staged)]) != 0:
                raise RuntimeError(f"protoc failed on proto/{proto}")
            for generated in staged.parent.glob("*_pb2*.py"):
                shutil.copy(generated, ROOT / out_dir / generated.name)


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        generate_stubs()
        super().run()


setup(cmdclass={"build_py": BuildPyWithStubs})
