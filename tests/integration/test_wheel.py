"""The built wheel works as a new user gets it: a clean venv, outside the checkout.

An editable install hides packaging mistakes: files read from the checkout, folders that were
never listed, stubs generated once by hand and left lying in the tree. This happened (a wheel whose
``alertbench schemas`` failed on a missing .proto and which installed top-level ``harness`` and
``transports``, names of other PyPI projects), so this test builds the wheel from the files a
clone has (tracked, plus new files not ignored: never generated stubs or build output), installs
it with its dependencies from PyPI into a fresh virtual environment without system site-packages,
and runs the commands of the README from an empty directory with an empty cache. It needs PyPI
(pip's own cache makes a second run quick) and takes a minute or two: an integration test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP = "alertbench"


@dataclass
class Installed:
    python: Path
    script: Path
    wheel: Path
    site_packages: Path
    workdir: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.script), *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, (
            f"alertbench {' '.join(args)} exited {done.returncode}\n"
            f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
        )
        return done


def _clone_files(dest: Path) -> None:
    """Copy what a fresh clone would have, plus new files not yet committed (not ignored ones)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        source = ROOT / os.fsdecode(raw)
        if not source.is_file():  # deleted in the work tree but still in the index
            continue
        target = dest / os.fsdecode(raw)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _clean_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["ALERTBENCH_CACHE"] = str(cache)
    venv_bin = Path(sys.prefix) / "bin"
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != venv_bin
    )
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    source, dist, env_dir = base / "src", base / "dist", base / "venv"
    work, cache = base / "elsewhere", base / "cache"
    for folder in (source, dist, work, cache):
        folder.mkdir()
    _clone_files(source)
    env = _clean_env(cache)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
        env=env,
        check=True,
        timeout=900,
    )
    wheels = list(dist.glob(f"{TOP}-*.whl"))
    assert len(wheels) == 1, wheels
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheels[0])],
        env=env,
        check=True,
        timeout=1200,
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Installed(python, env_dir / "bin" / TOP, wheels[0], Path(site), work, env)


def test_the_wheel_holds_one_top_level_package(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as archive:
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {TOP}, sorted(tops)


def test_the_installed_distribution_owns_no_top_level_name_but_alertbench(
    installed: Installed,
) -> None:
    (dist_info,) = installed.site_packages.glob(f"{TOP}-*.dist-info")
    record = (dist_info / "RECORD").read_text().splitlines()
    tops = {line.split(",", 1)[0].split("/", 1)[0] for line in record if line}
    # ".." is the console script in bin/, outside site-packages
    assert tops - {dist_info.name, ".."} == {TOP}, sorted(tops)
    top_level = dist_info / "top_level.txt"
    if top_level.exists():
        assert top_level.read_text().split() == [TOP]


def test_it_imports_from_site_packages_and_finds_its_data_there(installed: Installed) -> None:
    probe = (
        "import json, alertbench, alertbench.refimpl, alertbench.transports, alertbench.harness\n"
        "from alertbench import resources\n"
        "import alertbench.transports.grpc\n"  # its stubs: generated when the wheel was built
        "from alertbench.refimpl.codecs import get_serializer\n"
        "get_serializer('protobuf')\n"
        "print(json.dumps({'modules': [m.__file__ for m in (alertbench, alertbench.refimpl,"
        " alertbench.transports, alertbench.harness)], 'proto': str(resources.proto_dir()),"
        " 'schemas': str(resources.schemas_dir()), 'cache': str(resources.cache_dir()),"
        " 'pom': str(resources.package_path('alertbench.transports.servers', 'kafka', 'pom.xml')),"
        " 'workloads': str(resources.package_path('alertbench.harness', 'workloads'))}))"
    )
    done = subprocess.run(
        [str(installed.python), "-c", probe],
        cwd=installed.workdir,
        env=installed.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    where = json.loads(done.stdout)
    site = installed.site_packages.resolve()
    for path in [*where["modules"], where["proto"], where["schemas"], where["pom"]]:
        assert Path(path).resolve().is_relative_to(site), path
    assert (Path(where["proto"]) / "alertstream.proto").is_file()
    assert (Path(where["schemas"]) / "voevent3").is_dir()
    assert Path(where["pom"]).is_file()  # Maven fetches Kafka's jars from it
    assert sorted(Path(where["workloads"]).glob("*.yaml")), "no workload files installed"
    assert not Path(where["cache"]).resolve().is_relative_to(site)


def test_version(installed: Installed) -> None:
    version = installed.wheel.name.split("-")[1]
    assert version in installed.run("--version").stdout


def test_schemas(installed: Installed) -> None:
    out = installed.run("schemas").stdout
    assert "(latest, default)" in out
    assert "avro" in out and "protobuf" in out


def test_simulate(installed: Installed) -> None:
    installed.run("simulate", "--visits", "1", "--limit", "20", "-o", "X.avro")
    data = (installed.workdir / "X.avro").read_bytes()
    assert data.startswith(b"Obj\x01") and len(data) > 20 * 10_000


def test_a_small_matrix(installed: Installed) -> None:
    installed.run(
        "matrix", "--transports", "tcp", "--serializers", "avro", "--alerts", "100", "-o", "OUT",
        timeout=600,
    )  # fmt: skip
    out = installed.workdir / "OUT"
    json.loads((out / "results.json").read_text())
    assert "tcp" in (out / "report.md").read_text()


def test_nothing_was_compiled_at_run_time(installed: Installed) -> None:
    """Protobuf/gRPC stubs are made when the wheel is built, never on import or first use.

    Runs last (pytest keeps file order), after every command above has used the cache.
    """
    cache = Path(installed.env["ALERTBENCH_CACHE"])
    built = sorted(p.name for p in cache.glob("proto-*")) if cache.exists() else []
    assert built == [], f"stubs were generated at run time into the cache: {built}"
