"""The measurement engine (harness/engine.py): one loop for a burst, a rate and a workload.

Real transports throughout (TCP, ZeroMQ, Kafka from the project's launcher; memory:// where the
subscriber is a thread anyway). Each run is small and bounded: the engine's own idle timeout
ends a subscriber that stops hearing from the publisher.
"""

from __future__ import annotations

import time

import pytest
from alertbench.harness import engine
from alertbench.harness.engine import RunSpec, Schedule, run
from alertbench.harness.metrics import HIGHEST_US, LATE_NS
from alertbench.harness.pool import alert_pool
from alertbench.harness.workload import Workload
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.refimpl.codecs.base import SERIALIZERS, get_serializer

from alertbench.errors import ConfigError


class EveryTenthBroken(AvroSerializer):
    """Avro, except that every alert whose id ends in 3 is sent as bytes no codec reads."""

    def dumps(self, alert: dict) -> bytes:
        if alert["diaSourceId"] % 10 == 3:
            return b"\x00not an alert"
        return super().dumps(alert)


@pytest.fixture
def broken_codec(monkeypatch: pytest.MonkeyPatch) -> str:
    """A throwaway serializer, registered by name as any other (a child process resolves the
    same "module:Class" target)."""
    monkeypatch.setitem(SERIALIZERS, "every-tenth-broken", f"{__name__}:EveryTenthBroken")
    return "every-tenth-broken"


@pytest.mark.kafka
def test_a_burst_through_kafka_is_complete_and_measured(kafka_cluster) -> None:
    spec = RunSpec(
        "kafka", "avro", Schedule.burst(300), payload="pre-encoded", pool_size=20, seed=5,
        transport_options={"compression": "lz4"},
    )  # fmt: skip
    result = run(spec, shared=kafka_cluster)  # a fresh topic on the session's cluster
    assert result.alerts_received == result.alerts_sent == 300
    assert result.lost == result.duplicates == result.decode_errors == 0
    codec = get_serializer("avro")
    pool = [codec.dumps(a) for a in alert_pool(20, 5)]
    assert result.payload_bytes == sum(len(pool[i % 20]) for i in range(300))
    assert 0 < result.latency_us["p50"] <= result.latency_us["p99"] <= result.latency_us["max"]
    assert result.alerts_per_second > 0 and result.megabytes_per_second > 0
    assert result.options["compression"] == "lz4" and result.options["unacknowledged"] == 0
    assert result.transport_url.startswith(f"kafka://{kafka_cluster.bootstrap_servers}/kafka-")
    # Kafka's JVM is named by pid: its CPU is in the figures
    assert result.processes["servers"] and result.server_cpu_seconds > 0
    assert result.row()["schedule"]["kind"] == "burst"


@pytest.mark.parametrize("role", ["thread", "process"])
def test_a_burst_with_the_codec_in_the_loop_for_either_subscriber_role(role: str) -> None:
    result = run(RunSpec("tcp", "avro", Schedule.burst(200), subscriber_role=role, pool_size=10))
    assert result.alerts_received == 200 and result.lost == 0 and result.duplicates == 0
    assert result.subscriber_role == role and result.payload == "codec"
    (subscriber,) = result.processes["subscribers"]
    if role == "process":
        # its own interpreter, its own CPU and memory, reported apart from the publisher's
        assert subscriber["pid"] != result.processes["publisher"]["pid"]
        assert subscriber["cpu_seconds"] > 0 and result.subscriber_peak_rss_mb > 50
    else:
        assert subscriber["pid"] == result.processes["publisher"]["pid"]
        assert result.subscriber_peak_rss_mb is None
    assert result.cpu_seconds > 0 and result.cores_per_stream_at_lsst_rate > 0
    assert 0 < result.latency_us["p50"] <= result.latency_us["max"] < 10_000_000
    assert len(result.latency_cdf_us) > 10 and result.latency_out_of_range == 0
    assert result.sent_behind_schedule == 0  # nothing in a burst is late


def test_a_constant_rate_is_paced_and_measured_from_the_intended_times() -> None:
    schedule = Schedule.constant_rate(100.0, 1.5)
    result = run(RunSpec("tcp", "protobuf", schedule, pool_size=10))
    assert result.alerts_sent == 150 and result.alerts_received == 150 and result.lost == 0
    assert result.offered_alerts_per_second == pytest.approx(100.0, rel=0.02)
    assert result.publish_seconds >= 1.49 - 0.05  # paced, not a burst
    assert result.alerts_per_second < 110  # it cannot deliver faster than it was offered
    assert result.late_fraction <= 0.01  # 100 alerts/s of protobuf keeps to its schedule
    assert result.latency_us["p99"] < LATE_NS / 1e3 * 20


def test_a_workload_schedule_reaches_every_subscriber() -> None:
    workload = Workload(
        name="tiny", visits=2, alerts_per_visit=40, cadence_s=1.0, burst_window_s=0.3,
        subscribers=2, alert_pool=10,
    )  # fmt: skip
    spec = RunSpec(
        "zmq-pubsub", "avro", Schedule.from_workload(workload), subscribers=2,
        subscriber_role="thread", pool_size=10, idle_timeout=5.0,
    )  # fmt: skip
    result = run(spec)
    assert result.schedule["kind"] == "paced" and result.alerts_sent == 80
    assert result.fanout and result.alerts_received_per_subscriber == [80, 80]
    assert result.lost == 0 and result.duplicates == 0 and result.within_60s_fraction == 1.0


@pytest.mark.parametrize("role", ["thread", "process"])
def test_a_payload_that_will_not_decode_is_counted_and_the_run_goes_on(
    broken_codec: str, role: str
) -> None:
    spec = RunSpec("tcp", broken_codec, Schedule.burst(100), subscriber_role=role, pool_size=10)
    result = run(spec)
    assert result.decode_errors == 10  # ids 3, 13, ..., 93
    assert result.alerts_received == 90 and result.lost == 0  # arrived, but undecodable
    assert len(result.decode_error_examples) == 5  # the first few reasons, the count complete
    assert " alert 3: " in result.decode_error_examples[0]


def test_a_latency_beyond_the_histogram_is_counted_not_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A subscriber whose clock runs two hours ahead: every latency is over the 1 h range.
    skew = 2 * 3600 * 10**9
    monkeypatch.setattr(engine, "receipt_clock_ns", lambda: time.time_ns() + skew)
    spec = RunSpec("memory", "avro", Schedule.burst(30), subscriber_role="thread", pool_size=5)
    result = run(spec)
    assert result.alerts_received == 30
    assert result.latency_out_of_range == 30
    assert result.latency_histogram["above_range"] == 30
    assert result.latency_us["max"] >= skew / 1e3 > HIGHEST_US  # the true maximum, kept
    assert result.latency_us["p50"] >= HIGHEST_US * 0.999  # the tail is in the percentiles
    assert result.within_60s_fraction == 0.0


def test_mistakes_in_a_spec_are_refused_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match="subscriber_role"):
        RunSpec("tcp", subscriber_role="fiber")
    with pytest.raises(ConfigError, match="payload"):
        RunSpec("tcp", payload="compressed")
    with pytest.raises(ConfigError, match="threads of this process"):
        run(RunSpec("memory", "avro", Schedule.burst(5), pool_size=5))  # no processes
    with pytest.raises(ConfigError, match="does not carry"):
        run(RunSpec("vtp", "avro", Schedule.burst(5), pool_size=5))  # VTP: VOEvent only
    with pytest.raises(ConfigError, match="did you mean 'zmq-pushpull'"):
        run(RunSpec("zmq-pushpul", "avro", Schedule.burst(5), pool_size=5))
