"""The mini-broker decodes only the columns its filters read (plus diaSource.visit), and delivers
exactly what it delivers with a full columnar decode and on the dict reference path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alertbench.refimpl.codecs import columns as codec_columns
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.refimpl.minibroker import MiniBroker, MiniBrokerStore
from alertbench.refimpl.minibroker import service as service_module

FILTERS = {
    "ann": {
        "bright": "diaSource.snr > 9",
        "rising": "max(prvDiaSources.psfFlux) > 1.5 * diaSource.psfFlux",
    },
    "bob": {
        "long": "count(prvDiaSources) >= 5 and diaSource.band in ('g', 'r')",
        "faint": "mean(prvDiaForcedSources.psfFlux) < 300 or isnull(diaObject.ra)",
    },
    "cat": {"near": "angdist(diaSource.ra, diaSource.dec, 10.0, -5.0) < 30"},
}
EXPECTED_COLUMNS = {
    "diaSource.visit",
    "diaSource.snr",
    "diaSource.psfFlux",
    "prvDiaSources",
    "prvDiaSources.psfFlux",
    "diaSource.band",
    "prvDiaForcedSources",
    "prvDiaForcedSources.psfFlux",
    "diaObject.ra",
    "diaSource.ra",
    "diaSource.dec",
}


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.log: list[tuple[str, int, tuple[str, ...]]] = []

    def deliver(self, user: str, alert: dict[str, Any], payload: bytes, filters: list[str]) -> None:
        self.log.append((user, alert["diaSourceId"], tuple(filters)))

    def flush(self, timeout: float = 10.0) -> int:
        return 0

    def close(self) -> None:
        pass


def make_store(path: Path) -> tuple[MiniBrokerStore, dict[str, str]]:
    store = MiniBrokerStore(path)
    tokens = {}
    for user, filters in FILTERS.items():
        tokens[user] = store.add_user(user, alerts_per_visit=40)  # some users get truncated
        for name, text in filters.items():
            store.add_filter(tokens[user], name, text)
    return store, tokens


@pytest.fixture
def payloads(alerts: list[dict]) -> list[bytes]:
    codec = AvroSerializer()
    return [codec.dumps(a) for a in alerts]


def spy(monkeypatch: pytest.MonkeyPatch, project: bool) -> list[Any]:
    """Record the fields the service asks for; with ``project=False``, decode in full."""
    calls: list[Any] = []
    real = codec_columns.decode_columns

    def decode(messages, schema_version=None, fields=None):  # type: ignore[no-untyped-def]
        calls.append(None if fields is None else set(fields))
        return real(messages, schema_version, fields if project else None)

    monkeypatch.setattr(service_module, "decode_columns", decode)
    return calls


def run(tmp_path: Path, name: str, payloads: list[bytes]) -> tuple[Recorder, MiniBroker]:
    store, _ = make_store(tmp_path / f"{name}.sqlite")
    recorder = Recorder()
    broker = MiniBroker(store, [recorder])
    bad = [payloads[1][:-9], b"\x00\x00\x00\x04\x4d\x02", payloads[2] + b"\x00"]
    half = len(payloads) // 2
    broker.process([*payloads[:half], *bad])
    broker.process(payloads[half:])
    return recorder, broker


def test_projection_delivers_what_the_full_decode_delivers(
    tmp_path, payloads, alerts, monkeypatch
) -> None:
    calls = spy(monkeypatch, project=False)
    full, full_broker = run(tmp_path, "full", payloads)
    monkeypatch.undo()
    calls = spy(monkeypatch, project=True)
    projected, broker = run(tmp_path, "projected", payloads)
    assert calls and all(c == EXPECTED_COLUMNS for c in calls)
    assert projected.log == full.log and len(full.log) > 20
    assert broker.stats.undecodable == full_broker.stats.undecodable
    assert len(broker.stats.undecodable) == 3
    for counts in ("matched", "delivered", "truncated"):
        assert getattr(broker.stats, counts) == getattr(full_broker.stats, counts), counts
    assert sum(broker.stats.truncated.values()) > 0

    # ...and what the dict reference path delivers.
    store, _ = make_store(tmp_path / "dicts.sqlite")
    reference = Recorder()
    MiniBroker(store, [reference]).process_alerts(alerts, payloads)
    assert sorted(reference.log) == sorted(projected.log)


def test_the_columns_follow_the_filters_at_reload(tmp_path, payloads, monkeypatch) -> None:
    calls = spy(monkeypatch, project=True)
    store = MiniBrokerStore(tmp_path / "mb.sqlite")
    broker = MiniBroker(store, [Recorder()])
    broker.process(payloads[:10])
    assert calls[-1] == {"diaSource.visit"}  # no filters: only the visits are decoded
    token = store.add_user("dan")
    store.add_filter(token, "blue", "diaSource.band == 'g' and diaObject.ra > 0")
    broker.process(payloads[:10])
    assert calls[-1] == {"diaSource.visit", "diaSource.band", "diaObject.ra"}
    store.remove_filter(token, "blue")
    broker.process(payloads[:10])
    assert calls[-1] == {"diaSource.visit"}


def test_a_filter_registered_during_a_batch_finds_its_columns(
    tmp_path, payloads, alerts, monkeypatch
) -> None:
    # The service decodes with the filters of its reload, then evaluates with a later reload:
    # a filter added in between reads columns the projection left out (decoded on demand).
    store = MiniBrokerStore(tmp_path / "mb.sqlite")
    token = store.add_user("eve", alerts_per_visit=10_000)
    store.add_filter(token, "one", "diaSource.snr > 9")
    real = codec_columns.decode_columns

    def decode_then_register(messages, schema_version=None, fields=None):  # type: ignore[no-untyped-def]
        decoded = real(messages, schema_version, fields)
        store.add_filter(token, "two", "count(prvDiaSources) >= 5")
        return decoded

    monkeypatch.setattr(service_module, "decode_columns", decode_then_register)
    recorder = Recorder()
    MiniBroker(store, [recorder]).process(payloads)
    expected = [
        a["diaSourceId"]
        for a in alerts
        if (a["diaSource"]["snr"] or 0) > 9 or len(a["prvDiaSources"] or []) >= 5
    ]
    assert [alert_id for _, alert_id, _ in recorder.log] == expected
    assert any("two" in names for _, _, names in recorder.log)
