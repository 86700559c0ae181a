"""Files that hold secrets are the owner's alone (issue 14, item 17: the cluster state with its
SCRAM passwords and the mini-broker's store were 0644)."""

from __future__ import annotations

import stat

from alertbench.refimpl.minibroker.store import MiniBrokerStore
from alertbench.transports.servers.kafka_cluster import ClusterState

from alertbench.resources import write_private


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_cluster_state_with_its_passwords_is_0600(tmp_path) -> None:
    path = tmp_path / "kafka-cluster.json"
    path.write_text("{}")
    path.chmod(0o644)  # an older, world-readable file is tightened when rewritten
    ClusterState("127.0.0.1:1", [], str(tmp_path), auth=True, users={"admin": "x"}).save(path)
    assert _mode(path) == 0o600
    assert ClusterState.load(path).users == {"admin": "x"}


def test_the_minibroker_store_is_0600(tmp_path) -> None:
    path = tmp_path / "minibroker.sqlite"
    MiniBrokerStore(path).close()
    assert _mode(path) == 0o600


def test_write_private_never_leaves_the_file_readable_by_others(tmp_path) -> None:
    path = tmp_path / "secret"
    write_private(path, "s3cret")
    assert _mode(path) == 0o600 and path.read_text() == "s3cret"
