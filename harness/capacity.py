"""Three layers in one run: what the codec costs, what the transport carries, what holds end to end.

The matrix alone ranks the codec: every binary serialization reached about the same rate on
every transport, because encoding and decoding, not moving bytes, took the time. This separates
them, each layer measured in the same run on the same machine:

(a) **codec cost** per serialization: µs to encode and to decode one realistic alert, and its
    bytes (median of ``repeats`` passes over the alert pool, the min and max beside it);
(b) **transport capacity**: pre-encoded payloads, one publisher and N full-stream subscribers
    (default 5, LSST's community brokers), each subscriber in a process of its own, through the
    transport (an engine run) and through the raw library it is built on (:mod:`.raw`), the two
    interleaved, ``repeats`` times each: alerts/s, CPU per role, and the ratio of the two;
(c) **end to end**, the codec in the loop, ranked by the maximum sustainable rate
    (:mod:`.max_rate`: constant offered rates, nothing lost, p99 under 1 s), not by a burst.

From (a) and (b) it derives, per transport x serialization, what a 40,000-alert peak visit sent
in 60 s to N brokers needs: the publisher encodes each alert once and sends it N times, each
broker receives and decodes it; the transport's CPU per alert is measured at one payload size
and scaled by bytes to the others (stated in the report). The cores each role needs, the
bandwidth per broker, and whether it fits: one core per role, and this machine's cores in all.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

from alertbench.harness import raw
from alertbench.harness.engine import RunSpec, Schedule, run
from alertbench.harness.metrics import LSST_RATE, VISIT_BUDGET_S
from alertbench.harness.pool import alert_pool, with_alert_id
from alertbench.refimpl.codecs.base import SERIALIZERS, get_serializer
from alertbench.transports.base import kinds, transport_class

from alertbench.errors import ConfigError

PEAK_VISIT_ALERTS = 40_000
PEAK_RATE = PEAK_VISIT_ALERTS / VISIT_BUDGET_S
"""Alerts/s a peak visit needs to reach every broker within the 60 s budget (667)."""
BROKERS = 5
BASELINE_OF = {
    "tcp": "socket",
    "vtp": "socket",
    "zmq-pubsub": "pyzmq-pubsub",
    "zmq-pushpull": "pyzmq-pushpull",
    "grpc": "grpcio",
    "kafka": "confluent-kafka",
}
"""The raw library each transport is held against (VTP is framed TCP: a raw socket)."""
EFFICIENCY_TARGETS = {"tcp": 0.9, "zmq-pubsub": 0.9, "zmq-pushpull": 0.9, "grpc": 0.5}
"""Transport alerts/s over its raw library's, in the same run (issue 15); others are reported."""
PAYLOAD_CODEC: dict[str, tuple[str, dict[str, Any]]] = {"vtp": ("voevent", {"mode": "compact"})}
"""What a transport's capacity is measured with when it does not carry Avro: VTP carries the
mini-broker's compact VOEvent, each alert its own packet (a VTP broker refuses an event it has
seen, so payloads are not cycled)."""
UNIQUE_PAYLOADS = {"vtp"}
CODECS_EXTRA: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("voevent (compact)", "voevent", {"mode": "compact"}),
)
"""Codec variants costed beside every serialization's default (VTP's payload)."""


def _payload_codec(kind: str) -> tuple[str, dict[str, Any]]:
    return PAYLOAD_CODEC.get(kind, ("avro", {}))


def _label(name: str, options: dict[str, Any]) -> str:
    return f"{name} ({', '.join(str(v) for v in options.values())})" if options else name


def stats(values: Sequence[float]) -> dict[str, Any]:
    """Median with its min-max and every value, the way every figure here is published."""
    vals = [float(v) for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


# -- (a) codec cost ---------------------------------------------------------------------------


def codec_costs(
    serializers: Sequence[str], pool: list[dict[str, Any]], repeats: int,
    announce: Callable[[str], None],
) -> list[dict[str, Any]]:  # fmt: skip
    """µs per alert to encode and decode, bytes per alert, per serialization (default engine,
    and the variants of :data:`CODECS_EXTRA` whose serialization is asked for)."""
    rows = []
    entries = [(name, name, {}) for name in serializers]
    entries += [e for e in CODECS_EXTRA if e[1] in serializers]
    for label, name, options in entries:
        announce(f"(a) codec cost: {label}")
        codec = get_serializer(name, **options)
        encoded = [codec.dumps(a) for a in pool]
        enc, dec = [], []
        for _ in range(repeats):
            gc.collect()
            t0 = time.perf_counter()
            for a in pool:
                codec.dumps(a)
            t1 = time.perf_counter()
            for m in encoded:
                codec.loads(m)
            t2 = time.perf_counter()
            enc.append((t1 - t0) / len(pool) * 1e6)
            dec.append((t2 - t1) / len(pool) * 1e6)
        rows.append(
            {
                "codec": label,
                "serializer": name,
                "options": options,
                "content_type": codec.content_type,
                "bytes_per_alert": statistics.mean(len(m) for m in encoded),
                "encode_us": stats(enc),
                "decode_us": stats(dec),
            }
        )
    return rows


# -- (b) transport capacity against the raw library -------------------------------------------


def _raw_run(
    baseline: str, payloads: list[bytes], n: int, subscribers: int, shared: Any, partitions: int
) -> raw.RawResult:
    if baseline == "socket":
        return raw.raw_socket(payloads, n, subscribers)
    if baseline.startswith("pyzmq-"):
        return raw.raw_pyzmq(payloads, n, subscribers, pattern=baseline.removeprefix("pyzmq-"))
    if baseline == "grpcio":
        return raw.raw_grpcio(payloads, n, subscribers)
    if baseline == "confluent-kafka":
        return raw.raw_kafka(payloads, n, subscribers, shared.bootstrap_servers, partitions)
    raise ConfigError(f"no raw baseline {baseline!r} (known: {', '.join(raw.BASELINES)})")


def _per_alert_us(seconds: float, alerts: int) -> float:
    return seconds / max(alerts, 1) * 1e6


def _subscriber_us(b: raw.RawResult) -> float:
    """The median subscriber's CPU µs per alert it received itself (its share, when shared)."""
    return statistics.median(
        _per_alert_us(c, got)
        for c, got in zip(b.subscriber_cpu_seconds, b.received_per_subscriber, strict=True)
    )


def transport_capacity(
    transports: Sequence[str], n: int, subscribers: int, repeats: int, pool: list[dict[str, Any]],
    shared: dict[str, Any], partitions: int, announce: Callable[[str], None], progress: Any = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """One row per transport: its runs and its raw library's, interleaved repeat by repeat."""
    payloads: dict[str, list[bytes]] = {}
    for kind in transports:
        name, options = _payload_codec(kind)
        codec = get_serializer(name, **options)
        if kind in UNIQUE_PAYLOADS:
            announce(f"(b) encoding {n:,} distinct {_label(name, options)} packets for {kind}")
            payloads[kind] = [codec.dumps(with_alert_id(pool[i % len(pool)], i)) for i in range(n)]
        else:
            key = _label(name, options)
            payloads[kind] = payloads.get(key) or [codec.dumps(a) for a in pool]
            payloads[key] = payloads[kind]
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in transports}
    raws: dict[str, list[raw.RawResult]] = {k: [] for k in transports}
    for r in range(repeats):
        for kind in transports:
            name, options = _payload_codec(kind)
            announce(f"(b) capacity, repeat {r + 1}/{repeats}: {kind} to {subscribers} subscribers")
            spec = RunSpec(
                kind, name, Schedule.burst(n), payload="pre-encoded", payloads=payloads[kind],
                serializer_options=options,
                subscribers=subscribers, subscriber_role="process", idle_timeout=15.0,
                partitions=partitions, label=f"{kind} capacity, repeat {r + 1}",
            )  # fmt: skip
            result = run(spec, progress, shared=shared.get(kind))
            runs[kind].append(
                {
                    "alerts_per_second": result.alerts_per_second,
                    "alerts_received": result.alerts_received,
                    "lost": result.lost,
                    "duplicates": result.duplicates,
                    "publisher_cpu_us_per_alert": _per_alert_us(
                        result.processes["publisher"]["cpu_seconds"], n
                    ),
                    "subscriber_cpu_us_per_alert": statistics.median(
                        _per_alert_us(s["cpu_seconds"], s["received"])
                        for s in result.processes["subscribers"]
                    ),
                    "server_cpu_us_per_alert": _per_alert_us(result.server_cpu_seconds, n),
                    "latency_us": result.latency_us,
                    "latency_histogram": result.latency_histogram,
                }
            )
            baseline = BASELINE_OF.get(kind)
            if baseline is not None:
                announce(f"(b) capacity, repeat {r + 1}/{repeats}: raw {baseline}")
                raws[kind].append(
                    _raw_run(baseline, payloads[kind], n, subscribers, shared.get(kind), partitions)
                )
    rows = []
    for kind in transports:
        name, options = _payload_codec(kind)
        mine = runs[kind]
        fanout = bool(transport_class(kind).capabilities.fanout)
        row: dict[str, Any] = {
            "transport": kind,
            "payload_codec": _label(name, options),
            "bytes_per_alert": statistics.mean(len(p) for p in payloads[kind]),
            "alerts": n,
            "subscribers": subscribers,
            "fanout": fanout,
            "alerts_per_second": stats([m["alerts_per_second"] for m in mine]),
            "lost": [m["lost"] for m in mine],
            "duplicates": [m["duplicates"] for m in mine],
            "publisher_cpu_us_per_alert": stats([m["publisher_cpu_us_per_alert"] for m in mine]),
            "subscriber_cpu_us_per_alert": stats([m["subscriber_cpu_us_per_alert"] for m in mine]),
            "server_cpu_us_per_alert": stats([m["server_cpu_us_per_alert"] for m in mine]),
            "latency_us": [m["latency_us"] for m in mine],
            "latency_histograms": [m["latency_histogram"] for m in mine],
            "baseline": BASELINE_OF.get(kind),
            "efficiency_target": EFFICIENCY_TARGETS.get(kind),
            # fan-out: each of the N subscribers gets every alert; shared consumption splits
            # them, so the rate a broker sees is not the one that matters there
            "holds_peak_rate": (
                statistics.median(m["alerts_per_second"] for m in mine) >= PEAK_RATE
                if fanout
                else None
            ),
        }
        if raws[kind]:
            base = raws[kind]
            ratios = [
                m["alerts_per_second"] / b.alerts_per_second
                for m, b in zip(mine, base, strict=True)
            ]
            row["raw"] = {
                "alerts_per_second": stats([b.alerts_per_second for b in base]),
                "alerts_received": [b.alerts_received for b in base],
                "publisher_cpu_us_per_alert": stats(
                    [_per_alert_us(b.publisher_cpu_seconds, n) for b in base]
                ),
                "subscriber_cpu_us_per_alert": stats([_subscriber_us(b) for b in base]),
            }
            row["ratio_to_raw"] = stats(ratios)
            target = EFFICIENCY_TARGETS.get(kind)
            row["meets_efficiency"] = (
                None if target is None else row["ratio_to_raw"]["median"] >= target
            )
        rows.append(row)
    return rows


# -- (a) + (b): what a peak visit to N brokers needs ------------------------------------------


def cores_for_peak(
    codecs: list[dict[str, Any]], capacity: list[dict[str, Any]], brokers: int, cpus: int
) -> list[dict[str, Any]]:
    """Per transport x serialization it carries: cores per role for a peak visit in 60 s."""
    rows = []
    for cap in capacity:
        carrier = transport_class(cap["transport"]).capabilities
        for codec in codecs:
            if not carrier.carries(codec["content_type"]):
                continue
            scale = codec["bytes_per_alert"] / cap["bytes_per_alert"]
            send_us = cap["publisher_cpu_us_per_alert"]["median"] * scale
            receive_us = cap["subscriber_cpu_us_per_alert"]["median"] * scale
            pub_us = codec["encode_us"]["median"] + send_us
            broker_us = codec["decode_us"]["median"] + receive_us
            server_us = cap["server_cpu_us_per_alert"]["median"] * scale
            publisher = PEAK_RATE * pub_us / 1e6
            broker = PEAK_RATE * broker_us / 1e6
            server = PEAK_RATE * server_us / 1e6
            total = publisher + brokers * broker + server
            carried = cap["alerts_per_second"]["median"] / scale
            rows.append(
                {
                    "transport": cap["transport"],
                    "serializer": codec["codec"],
                    "bytes_per_alert": codec["bytes_per_alert"],
                    "publisher_us_per_alert": pub_us,
                    "broker_us_per_alert": broker_us,
                    "publisher_cores": publisher,
                    "broker_cores": broker,
                    "server_cores": server,
                    "total_cores": total,
                    "mbit_per_broker": codec["bytes_per_alert"] * PEAK_RATE * 8 / 1e6,
                    "transport_alerts_per_second_at_this_size": carried,
                    "fits_one_core_per_role": publisher <= 1.0 and broker <= 1.0
                    and (carried >= PEAK_RATE or not cap["fanout"]),
                    "fits_this_machine": total <= cpus,
                }
            )  # fmt: skip
    return sorted(rows, key=lambda r: (not r["fits_one_core_per_role"], r["total_cores"]))


# -- (c) end to end ---------------------------------------------------------------------------


def end_to_end(
    transports: Sequence[str], serializers: Sequence[str], seconds: float, shared: dict[str, Any],
    announce: Callable[[str], None], progress: Any = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """The maximum sustainable rate of each combination, codec in the loop, one subscriber."""
    from alertbench.harness.max_rate import find_max_rate

    rows = []
    for name in serializers:
        content_type = get_serializer(name).content_type
        for kind in transports:
            if not transport_class(kind).capabilities.carries(content_type):
                continue
            announce(f"(c) end to end: {kind} x {name}, maximum sustainable rate")
            found = find_max_rate(
                kind, name, start=64.0, seconds=seconds, max_steps=8, progress=progress,
                shared=shared.get(kind),
            )  # fmt: skip
            rows.append(
                {
                    "transport": kind,
                    "serializer": name,
                    "max_sustainable_rate": found["max_sustainable_rate"],
                    "headroom_over_lsst": found["headroom_over_lsst"],
                    "steps": found["steps"],
                    "seconds_per_step": seconds,
                }
            )
    return sorted(rows, key=lambda r: -r["max_sustainable_rate"])


# -- the run ----------------------------------------------------------------------------------


def run_layers(
    transports: Sequence[str] | None = None,
    serializers: Sequence[str] | None = None,
    alerts: int = 2_000,
    subscribers: int = BROKERS,
    repeats: int = 3,
    pool_size: int = 50,
    seed: int = 1,
    partitions: int = 3,
    end_to_end_seconds: float = 0.0,
    end_to_end_serializers: Sequence[str] | None = None,
    announce: Callable[[str], None] = print,
    progress: Any = None,
) -> dict[str, Any]:
    """The three layers and the derived table; the results payload (kind ``capacity``).
    ``end_to_end_seconds`` 0 leaves layer (c) out."""
    transports = list(transports or kinds(interprocess=True))
    serializers = list(serializers or SERIALIZERS)
    for kind in transports:
        transport_class(kind)  # a typo is an error before anything starts
    for name in serializers:
        get_serializer(name)
    if repeats < 1 or alerts < 1 or subscribers < 1:
        raise ConfigError("repeats, alerts and subscribers are at least 1")
    announce(f"simulating {pool_size} realistic alerts (seed {seed})...")
    pool = alert_pool(pool_size, seed)
    codecs = codec_costs(serializers, pool, repeats, announce)
    with ExitStack() as stack:
        shared: dict[str, Any] = {}
        for kind in transports:
            resource = stack.enter_context(transport_class(kind).shared_resources())
            if resource is not None:
                shared[kind] = resource
                announce(f"warming {kind} off the record")
                run(
                    RunSpec(kind, _payload_codec(kind)[0], Schedule.burst(300),
                            serializer_options=_payload_codec(kind)[1], payload="pre-encoded",
                            unique_payloads=kind in UNIQUE_PAYLOADS, pool_size=20, seed=seed,
                            label=f"warming {kind}"),
                    shared=resource,
                )  # fmt: skip
        capacity = transport_capacity(
            transports, alerts, subscribers, repeats, pool, shared, partitions, announce, progress
        )
        e2e = (
            end_to_end(
                transports,
                list(end_to_end_serializers or serializers),
                end_to_end_seconds,
                shared,
                announce,
                progress,
            )
            if end_to_end_seconds > 0
            else []
        )
    cpus = os.cpu_count() or 1
    return {
        "alerts_per_run": alerts,
        "subscribers": subscribers,
        "repeats": repeats,
        "pool_size": pool_size,
        "seed": seed,
        "partitions": partitions,
        "peak_visit_alerts": PEAK_VISIT_ALERTS,
        "visit_budget_s": VISIT_BUDGET_S,
        "peak_rate": PEAK_RATE,
        "lsst_rate": LSST_RATE,
        "cpus": cpus,
        "codecs": codecs,
        "capacity": capacity,
        "cores_for_peak": cores_for_peak(codecs, capacity, subscribers, cpus),
        "end_to_end": e2e,
        "end_to_end_seconds_per_step": end_to_end_seconds,
    }
