"""Workload fields that make transports comparable: layout, warm-up, duration, producers."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from alertbench.harness import workload as workload_module
from alertbench.harness.cli import main
from alertbench.harness.engine import RunSpec, Schedule, several_publishers_refusal
from alertbench.harness.workload import WORKLOADS_DIR, Workload, run_workload

from alertbench.errors import AlertbenchError, ConfigError

SHIPPED = sorted(WORKLOADS_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_workload_loads_and_leaves_the_layout_to_the_topic(path: Path) -> None:
    workload = Workload.load(path)
    assert workload.name == path.stem and workload.visit_count >= 1
    text = path.read_text()
    assert "# partitions:" in text and "# replication_factor:" in text  # documented, unstated
    # unstated, so a topic made beforehand (any layout) is used as it is; a new one as before
    assert workload.partitions is None and workload.replication_factor is None
    assert workload.new_topic_layout == {"partitions": 3, "replication_factor": 1}
    assert workload.producers == 1  # a shipped workload runs on every transport
    warm = workload.warm_up_schedule()
    assert warm is not None and warm.count >= 1 and warm.duration_s <= workload.warm_up_s


def test_duration_repeats_visits_at_the_cadence() -> None:
    w = Workload(name="d", duration_s=400.0, alerts_per_visit=30, cadence_s=39.0,
                 time_compression=10.0)  # fmt: skip
    assert w.visits == 10  # whole cadence slots in 400 s
    schedule = w.schedule()
    assert len(schedule) == 300 and {v for v, _ in schedule} == set(range(10))
    assert max(o for _, o in schedule) < 400.0 / 10.0  # compressed as cadence is
    # the same night stated as visits, and both stated consistently, are the same workload
    assert Workload(name="d", visits=10, alerts_per_visit=30, time_compression=10.0,
                    cadence_s=39.0).schedule() == schedule  # fmt: skip
    same = Workload(name="d", visits=10, duration_s=400.0, alerts_per_visit=30)
    assert dataclasses.replace(same, subscribers=3).visits == 10  # the CLI's override


def test_duration_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "hour.yaml"
    path.write_text("name: hour\nalerts_per_visit: 5\nduration_s: 3600\ntime_compression: 100\n")
    hour = Workload.load(path)
    assert hour.visits == 92 and hour.duration_s == 3600  # 92 x 39 s = 3588 s
    assert len(hour.schedule()) == 92 * 5


BAD = [
    ({"visits": 0}, "visits must be at least 1, not 0"),
    ({"visits": 2.5}, "visits must be a whole number, not 2.5"),
    ({"visits": None}, "gives visits or duration_s"),
    ({"visits": None, "duration_s": -5}, "duration_s must be above 0, not -5"),
    ({"visits": None, "duration_s": 10.0}, "shorter than one cadence"),
    ({"visits": 3, "duration_s": 400.0}, "visits 3 and duration_s 400 disagree"),
    ({"alerts_per_visit": 0}, "alerts_per_visit must be above 0"),
    ({"alerts_per_visit": "many"}, "alerts_per_visit must be a number, not 'many'"),
    ({"cadence_s": -1.0}, "cadence_s must be above 0"),
    ({"time_compression": 0}, "time_compression must be above 0"),
    ({"burst_window_s": 50.0}, "longer than cadence_s"),
    ({"subscribers": True}, "subscribers must be a whole number, not True"),
    ({"partitions": 0}, "partitions must be at least 1, not 0"),
    ({"partitions": 2.0}, "partitions must be a whole number, not 2.0"),
    ({"partitions": "3"}, "partitions must be a whole number, not '3'"),
    ({"replication_factor": -1}, "replication_factor must be at least 1"),
    ({"replication_factor": False}, "replication_factor must be a whole number, not False"),
    ({"producers": 0}, "producers must be at least 1"),
    ({"producers": None}, "producers must be a whole number, not None"),
    ({"producers": 1.5}, "producers must be a whole number, not 1.5"),
    ({"warm_up_s": "10s"}, "warm_up_s must be a number, not '10s'"),
    ({"warm_up_s": float("inf")}, "warm_up_s must be finite"),
    ({"visits": None, "duration_s": float("inf")}, "duration_s must be finite"),
    ({"visits": None, "duration_s": "1h"}, "duration_s must be a number, not '1h'"),
    ({"warm_up_s": -1.0}, "warm_up_s must be at least 0"),
    ({"warm_up_s": float("nan")}, "warm_up_s must be finite"),
    ({"cutout_fraction": 1.5}, "cutout_fraction must be between 0 and 1"),
    ({"seed": -3}, "seed must be at least 0"),
    ({"name": ""}, "name must be a non-empty string"),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[m for _, m in BAD])
def test_nonsense_is_refused_in_one_line(change: dict[str, Any], message: str) -> None:
    fields = {"name": "w", "visits": 1, "alerts_per_visit": 10, **change}
    with pytest.raises(ConfigError, match=message) as caught:
        Workload(**fields)
    assert "\n" not in str(caught.value)


def test_a_file_names_itself_in_its_error_and_unknown_fields_stay_refused(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nvisits: 1\nalerts_per_visit: 10\npartitions: 0\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: partitions must be at least 1"):
        Workload.load(bad)
    bad.write_text("name: x\nvisits: 1\nalerts_per_visit: 10\nwarmup: 5\n")
    with pytest.raises(AlertbenchError, match=r"unknown workload fields \['warmup'\]"):
        Workload.load(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="a mapping of fields"):
        Workload.load(bad)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("producers: 4\n", "producers 4: several publisher processes need a transport whose"),
        ("partitions: -2\n", "bad.yaml: partitions must be at least 1, not -2"),
        ("warm_up_s: .nan\n", "bad.yaml: warm_up_s must be finite"),
        ("visits: null\nduration_s: 20\n", "shorter than one cadence"),
    ],
    ids=["producers", "partitions", "warm_up_s", "duration_s"],
)
def test_the_cli_says_what_is_wrong_in_one_line_and_exits_2(
    tmp_path, capsys, body: str, message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nvisits: 1\nalerts_per_visit: 10\n" + body)
    assert main(["run", str(bad), "--transport", "tcp"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("tcp", "a tcp publisher binds the stream's port"),
        ("tcp://127.0.0.1:1", "a tcp publisher binds the stream's port"),
        ("zmq-pubsub", "a zmq+tcp publisher binds the stream's port"),
        ("vtp", "a vtp publisher binds the stream's port"),
        ("memory", "lives in one process"),
    ],
)
def test_several_producers_are_refused_where_publishers_bind_a_port(
    monkeypatch, target: str, why: str
) -> None:
    monkeypatch.setattr(workload_module, "run", lambda *a, **k: pytest.fail("it ran"))
    monkeypatch.setattr(workload_module, "open_stream", lambda *a, **k: pytest.fail("opened"))
    w = Workload(name="p", visits=1, alerts_per_visit=10, producers=189)
    with pytest.raises(ConfigError, match=re.escape(why)) as caught:
        run_workload(w, target, "avro")
    assert "\n" not in str(caught.value) and "producers 189" in str(caught.value)


def test_kafka_takes_several_producers_and_one_is_always_fine() -> None:
    assert several_publishers_refusal("kafka", 189) is None
    assert several_publishers_refusal("kafka://127.0.0.1:9092/alerts", 4) is None
    assert several_publishers_refusal("tcp", 1) is None
    with pytest.raises(ConfigError, match="publishers must be at least 1"):
        RunSpec("tcp", schedule=Schedule.burst(1), publishers=0)


def test_the_engine_refuses_several_publishers_too(monkeypatch) -> None:
    from alertbench.harness import engine

    spec = RunSpec("tcp://127.0.0.1:1", schedule=Schedule.burst(4), publishers=2)
    with pytest.raises(ConfigError, match="a tcp publisher binds the stream's port"):
        engine._run(spec, spec.transport, None, [], None)


def test_partitions_reach_the_run_spec(monkeypatch) -> None:
    seen = []

    class Result:
        def row(self) -> dict[str, Any]:
            return {"alerts_sent": seen[-1].schedule.count}

    def fake_run(spec: Any, progress: Any = None) -> Result:
        seen.append(spec)
        return Result()

    monkeypatch.setattr(workload_module, "run", fake_run)
    w = Workload(name="p", visits=1, alerts_per_visit=20, partitions=7, replication_factor=2)
    row = run_workload(w, "tcp://127.0.0.1:1", "avro")
    assert [s.partitions for s in seen] == [7] and seen[0].payload == "codec"
    assert [s.publishers for s in seen] == [1]
    assert row["workload"]["partitions"] == 7 and row["workload"]["replication_factor"] == 2
    assert row["topic"] is None and row["warm_up"] is None  # tcp has no topic to lay out
    # unstated: the engine's default, as before the workload could say
    run_workload(Workload(name="p", visits=1, alerts_per_visit=20), "tcp://127.0.0.1:1", "avro")
    assert seen[-1].partitions == 3


class _Topic:
    """A Kafka transport's face for the layout check: a topic that exists (or is made)."""

    topic = "alerts"

    def __init__(self, layout: dict[str, int] | None) -> None:
        self.layout = layout
        self.created: list[dict[str, int]] = []

    def ensure_topic(self, partitions: int, replication_factor: int) -> None:
        if self.layout is None:  # missing: created as asked
            self.layout = {"partitions": partitions, "replication_factor": replication_factor}
            self.created.append(self.layout)


def _layout(monkeypatch, topic: _Topic) -> None:
    monkeypatch.setattr(workload_module, "get_transport", lambda url, **o: topic)
    monkeypatch.setattr(workload_module, "_topic_layout", lambda t: dict(t.layout))


def _l(partitions: int, replication_factor: int) -> dict[str, int]:
    return {"partitions": partitions, "replication_factor": replication_factor}


@pytest.mark.parametrize(
    ("stated", "existing", "expected"),
    [
        ({}, _l(1, 1), _l(1, 1)),
        ({"partitions": 1}, _l(1, 1), None),
        ({"replication_factor": 3}, _l(12, 3), None),
        ({}, None, _l(3, 1)),  # the previous defaults
        ({"partitions": 6}, None, _l(6, 1)),
        ({"partitions": 2, "replication_factor": 2}, None, _l(2, 2)),
    ],
    ids=["adopted", "stated-and-equal", "rf-stated-and-equal", "new-defaults", "new-stated",
         "new-both-stated"],
)  # fmt: skip
def test_an_existing_topic_is_adopted_unless_the_workload_states_otherwise(
    monkeypatch, stated: dict[str, int], existing: dict[str, int] | None, expected: Any
) -> None:
    topic = _Topic(existing)
    _layout(monkeypatch, topic)
    w = Workload(name="t", visits=1, alerts_per_visit=10, **stated)
    have = workload_module._lay_out_topic(w, "kafka://127.0.0.1:1/alerts", {})
    assert have == (expected or existing)
    assert topic.created == ([] if existing is not None else [expected])


@pytest.mark.parametrize(
    ("stated", "said"),
    [
        ({"partitions": 3}, "not the workload's partitions 3"),
        ({"replication_factor": 2}, "not the workload's replication_factor 2"),
        ({"partitions": 3, "replication_factor": 2}, "partitions 3 and replication_factor 2"),
    ],
)
def test_a_stated_layout_an_existing_topic_lacks_is_refused(
    monkeypatch, capsys, tmp_path, stated: dict[str, int], said: str
) -> None:
    _layout(monkeypatch, _Topic({"partitions": 1, "replication_factor": 1}))
    w = Workload(name="t", visits=1, alerts_per_visit=10, **stated)
    with pytest.raises(ConfigError, match=said) as caught:
        workload_module._lay_out_topic(w, "kafka://127.0.0.1:1/alerts", {})
    assert "exists with 1 partition(s) and replication factor 1" in str(caught.value)
    assert "\n" not in str(caught.value)
    # the CLI: one line, exit status 2, nothing run
    monkeypatch.setattr(workload_module, "run", lambda *a, **k: pytest.fail("it ran"))
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nvisits: 1\nalerts_per_visit: 10\n"
                    + "".join(f"{k}: {v}\n" for k, v in stated.items()))  # fmt: skip
    assert main(["run", str(path), "--transport", "kafka://127.0.0.1:1/alerts"]) == 2
    err = capsys.readouterr().err.strip()
    assert said in err and len(err.splitlines()) == 1


def test_replication_on_the_one_broker_local_kafka_is_refused() -> None:
    w = Workload(name="r", visits=1, alerts_per_visit=10, replication_factor=3)
    with pytest.raises(ConfigError, match="replication_factor 3 needs a cluster"):
        run_workload(w, "kafka", "avro")  # refused before any cluster is started


def test_a_tiny_tcp_run_is_warmed_off_the_record() -> None:
    w = Workload(name="tiny-warm", visits=1, alerts_per_visit=40, cadence_s=1.0,
                 burst_window_s=0.2, time_compression=20.0, alert_pool=10,
                 warm_up_s=0.005)  # fmt: skip
    row = run_workload(w, "tcp", "avro", roles="threads", idle_timeout=5.0)
    warm = row["warm_up"]
    assert warm["done"] and warm["seconds"] == 0.005
    assert 1 <= warm["alerts_sent"] < 40  # the first 5 ms of a 10 ms burst window
    assert warm["lost"] == 0 and warm["alerts_received_per_subscriber"] == [warm["alerts_sent"]]
    # the measured run is the workload's alone: the warm-up's alerts are not in its figures
    assert row["alerts_sent"] == 40 and row["alerts_received_per_subscriber"] == [40]
    assert row["lost"] == 0 and row["duplicates"] == 0 and row["payload"] == "codec"
    assert row["transport_url"].startswith("tcp://127.0.0.1:") and row["topic"] is None
