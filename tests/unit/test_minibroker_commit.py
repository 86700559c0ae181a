"""The mini-broker core commits its input only after a batch reached every output (issue 14,
item 16: the Kafka input's offsets were committed as alerts were read, before delivery, so a
crash lost the visit in flight). A list input and list outputs record the order of events."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alertbench.harness.minibroker_io import SubscriberInput
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.refimpl.minibroker import MiniBroker, MiniBrokerStore
from alertbench.transports.base import Envelope, Received

FILTER = "diaSource.snr > 9"


def wanted(alert: dict) -> bool:  # FILTER in plain Python
    snr = alert["diaSource"]["snr"]
    return snr is not None and snr > 9


@dataclass(frozen=True)
class Message:
    payload: bytes
    origin: str
    position: object


class ListInput:
    """Messages in order; ``None`` in the list is a pause in the stream (it ends a batch)."""

    def __init__(self, items: list[bytes | None], log: list[tuple[Any, ...]]) -> None:
        self.items = list(items)
        self.log = log
        self.returned = 0  # messages poll() handed over

    def poll(self, timeout: float = 1.0) -> Message | None:
        if not self.items:
            return None
        item = self.items.pop(0)
        if item is None:
            return None
        self.returned += 1
        return Message(item, f"list@{self.returned - 1}", self.returned - 1)

    def commit(self) -> int:
        self.log.append(("commit", self.returned))
        return 1


class Recorder:
    """An output that logs each delivery and flush; ``pending`` is what its flush reports, and
    ``crash_at`` the delivery (counted from 1) at which it dies as a killed process would."""

    name = "recorder"

    def __init__(self, log: list[tuple[Any, ...]], pending: int = 0, crash_at: int = 0) -> None:
        self.log = log
        self.pending = pending
        self.crash_at = crash_at
        self.delivered = 0

    def deliver(self, user: str, alert: dict[str, Any], payload: bytes, filters: list[str]) -> None:
        self.delivered += 1
        if self.delivered == self.crash_at:
            raise SystemExit("killed mid-batch")  # not an AlertbenchError: nothing catches it
        self.log.append(("deliver", alert["diaSourceId"]))

    def flush(self, timeout: float = 10.0) -> int:
        self.log.append(("flush", self.name))
        return self.pending

    def close(self) -> None:
        pass


@pytest.fixture
def store(tmp_path: Path) -> MiniBrokerStore:
    store = MiniBrokerStore(tmp_path / "mb.sqlite")
    token = store.add_user("ann", alerts_per_visit=10_000)
    store.add_filter(token, "bright", FILTER)
    return store


@pytest.fixture
def stream(alerts: list[dict]) -> tuple[list[bytes | None], dict[int, int]]:
    """The visit as two batches (a pause between), and alert id -> index in the stream."""
    codec = AvroSerializer()
    payloads = [codec.dumps(a) for a in alerts]
    half = len(payloads) // 2
    index = {a["diaSourceId"]: i for i, a in enumerate(alerts)}
    return [*payloads[:half], None, *payloads[half:]], index


def test_the_input_is_committed_only_after_each_batch_reached_every_output(
    store, stream, alerts
) -> None:
    items, index = stream
    log: list[tuple[Any, ...]] = []
    first, second = Recorder(log), Recorder(log)
    second.name = "second"
    source = ListInput(items, log)
    broker = MiniBroker(store, [first, second])
    broker.run(source, max_alerts=len(alerts), batch_idle=0.01)

    commits = [i for i, event in enumerate(log) if event[0] == "commit"]
    assert [log[i][1] for i in commits] == [len(alerts) // 2, len(alerts)], log[-5:]
    assert broker.stats.commits == 2
    matching = [a["diaSourceId"] for a in alerts if wanted(a)]
    assert sorted(e[1] for e in log if e[0] == "deliver") == sorted(2 * matching)
    for at in commits:
        covered = log[at][1]  # messages 0 .. covered-1 are committed: never read again
        before, after = log[:at], log[at + 1 :]
        # Every matching alert the commit covers went to both outputs before it...
        for alert_id in matching:
            if index[alert_id] < covered:
                assert before.count(("deliver", alert_id)) == 2, alert_id
                assert ("deliver", alert_id) not in after
        # ...and both outputs were flushed after the last delivery and before the commit.
        last_delivery = max(i for i, e in enumerate(before) if e[0] == "deliver")
        flushed = {e[1] for e in before[last_delivery:] if e[0] == "flush"}
        assert flushed == {"recorder", "second"}


def test_a_crash_mid_batch_leaves_the_commit_at_the_last_delivered_batch(
    store, stream, alerts
) -> None:
    items, index = stream
    log: list[tuple[Any, ...]] = []
    half = len(alerts) // 2
    first_half = sum(wanted(a) for a in alerts[:half])
    # Dies a few deliveries into the second batch: its alerts were read, not all delivered.
    output = Recorder(log, crash_at=first_half + 3)
    source = ListInput(items, log)
    with pytest.raises(SystemExit):
        MiniBroker(store, [output]).run(source, max_alerts=len(alerts), batch_idle=0.01)
    assert source.returned == len(alerts)  # the whole visit was read...
    assert [e for e in log if e[0] == "commit"] == [("commit", half)]  # ...half committed
    assert log.index(("commit", half)) > max(
        i for i, e in enumerate(log) if e[0] == "deliver" and index[e[1]] < half
    )


def test_an_output_that_cannot_confirm_a_batch_stops_the_run_uncommitted(
    store, stream, alerts
) -> None:
    from alertbench.refimpl.minibroker.service import UndeliveredError

    items, _ = stream
    log: list[tuple[Any, ...]] = []
    confirmed, stuck = Recorder(log), Recorder(log, pending=2)
    stuck.name = "stuck"
    source = ListInput(items, log)
    broker = MiniBroker(store, [confirmed, stuck])
    with pytest.raises(UndeliveredError, match="not committed") as raised:
        broker.run(source, max_alerts=len(alerts), batch_idle=0.01, flush_timeout=0.5)
    assert raised.value.unconfirmed == {"stuck": 2}
    assert not [e for e in log if e[0] == "commit"]
    assert source.returned == len(alerts) // 2  # stopped at the first batch: nothing more read
    assert broker.stats.commits == 0


class CommittingSubscriber:
    """A transport subscriber with Kafka's manual ``commit()``."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads = list(payloads)
        self.returned = 0
        self.commits: list[int] = []

    def poll(self, timeout: float = 1.0) -> Received | None:
        if not self.payloads:
            return None
        self.returned += 1
        envelope = Envelope(self.payloads.pop(0), "application/avro", self.returned)
        return Received(envelope, 0, f"t/0@{self.returned - 1}", (0, self.returned - 1))

    def counters(self) -> dict[str, int]:
        return {"received": self.returned}

    def commit(self) -> int:
        self.commits.append(self.returned)
        return 1

    def close(self) -> None:
        pass


def test_the_subscriber_input_forwards_commits_to_its_subscriber(store, alerts) -> None:
    codec = AvroSerializer()
    subscriber = CommittingSubscriber([codec.dumps(a) for a in alerts])
    source = SubscriberInput(subscriber)
    log: list[tuple[Any, ...]] = []
    MiniBroker(store, [Recorder(log)]).run(source, max_alerts=len(alerts), batch_idle=0.01)
    assert subscriber.commits == [len(alerts)]
    assert len(log) == sum(wanted(a) for a in alerts) + 2  # deliveries, then 2 flushes

    from alertbench.refimpl.minibroker.ports import CommittingInput

    assert isinstance(source, CommittingInput)
