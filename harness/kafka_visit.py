"""One visit of realistic alerts through Kafka, once per compression codec (``kafka-visit``).

A short caller of the engine (:mod:`.engine`): each codec is one burst of pre-encoded alerts
(a pool of distinct simulated alerts encoded before the clock starts, so the figures are
Kafka's and its compression's, not the serializer's) on a fresh topic, with the subscriber in
a process of its own like every other run. Before the first codec the broker is warmed off the
record (group coordinator, idempotent-producer ids, JIT), so the first codec measured does not
pay for the cold start. Kafka's CPU counts in the results when this process started it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from alertbench.harness.engine import RunResult, RunSpec, Schedule, run
from alertbench.transports.kafka import KafkaTransport

WARMUP_ALERTS = 500


def kafka_visits(
    compressions: Sequence[str],
    *,
    n_alerts: int = 10_000,
    pool_size: int = 500,
    seed: int = 1,
    bootstrap_servers: str | None = None,
    progress: Any = None,
    transport_options: Mapping[str, Any] | None = None,
) -> Iterator[RunResult]:
    """One result per codec in ``compressions``, as each finishes.

    ``bootstrap_servers``: a running cluster to use; without it a local single-node cluster is
    started for the visits and stopped after the last. ``transport_options``: how to reach it
    (credentials, TLS, librdkafka ``config``), given to every transport and to the recipe that
    creates each visit's topic."""
    client = dict(transport_options or {})
    with ExitStack() as stack:
        stream_options: dict[str, Any] = {"transport_options": client} if client else {}
        if bootstrap_servers:
            shared = None
            stream_options["bootstrap_servers"] = bootstrap_servers
        else:
            shared = stack.enter_context(KafkaTransport.shared_resources())

        def spec(n: int, options: dict[str, str], label: str) -> RunSpec:
            return RunSpec(
                "kafka",
                "avro",
                Schedule.burst(n),
                payload="pre-encoded",
                pool_size=pool_size,
                seed=seed,
                transport_options={**client, **options},
                stream_options=stream_options,
                label=label,
            )

        run(spec(WARMUP_ALERTS, {}, "warming Kafka"), shared=shared)
        for codec in compressions:
            visit = spec(n_alerts, {"compression": codec}, f"kafka, {codec}")
            yield run(visit, progress, shared=shared)
