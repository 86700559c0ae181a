"""How fast the mini-broker filters: many users' filters over one full visit.

Two numbers, measured in the same run: the time to evaluate every registered filter over a
visit (columns built from the decoded alerts, then each compiled filter over them), and the rate
at which the whole service gets through the visit when it reads it from Kafka (decode, evaluate,
deliver VOEvents over VTP to connected subscribers and Avro to per-user Kafka topics).
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from alertbench.harness.environment import environment
from alertbench.harness.metrics import LSST_RATE
from alertbench.harness.minibroker_io import KafkaUserTopics, SubscriberInput, VtpUserStreams
from alertbench.harness.pool import alert_pool
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.refimpl.codecs.columns import decode_columns
from alertbench.refimpl.minibroker import MiniBroker, MiniBrokerStore
from alertbench.refimpl.minibroker.filters import columns_read, compile_filter
from alertbench.refimpl.minibroker.filters.columns import VisitColumns
from alertbench.transports.base import Envelope, Start
from alertbench.transports.kafka import KafkaTransport
from alertbench.transports.vtp import VtpTransport

TEMPLATES = (
    "diaSource.snr > {snr:.1f}",
    "diaSource.snr > {snr:.1f} and count(prvDiaSources) >= {n}",
    "max(prvDiaSources.psfFlux) > {k:.2f} * diaSource.psfFlux",
    "angdist(diaSource.ra, diaSource.dec, {ra:.4f}, {dec:.4f}) < {radius:.2f}",
    "log10(abs(diaSource.psfFlux)) > {mag:.2f} and not diaSource.isDipole",
    "mean(prvDiaForcedSources.psfFlux) < {flux:.1f} or isnull(diaObject.ra)",
    'diaSource.band in ("g", "r", "i") and diaSource.reliability > {p:.2f}',
    "diaObject.r_psfFluxNdata - diaObject.g_psfFluxNdata > {n}",
    "min(prvDiaSources.snr) >= {snr:.1f} and diaSource.extendedness < {p:.2f}",
    "abs(diaSource.psfFlux / diaSource.psfFluxErr) > {snr:.1f}"
    " and count(prvDiaForcedSources) > {n}",
)


def benchmark_filters(count: int, alerts: list[dict], seed: int = 1) -> list[str]:
    """``count`` varied filters (every template in turn, thresholds drawn at random)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        centre = alerts[int(rng.integers(len(alerts)))]["diaSource"]
        values = {
            "snr": rng.uniform(5, 40),
            "n": int(rng.integers(1, 40)),
            "k": rng.uniform(1.1, 4),
            "ra": centre["ra"],
            "dec": centre["dec"],
            "radius": rng.uniform(0.05, 1.0),
            "mag": rng.uniform(2.5, 4.5),
            "flux": rng.uniform(-500, 500),
            "p": rng.uniform(0.1, 0.9),
        }
        out.append(TEMPLATES[i % len(TEMPLATES)].format(**values))
    return out


def _vtp_users(url: str, tokens: list[str], counts: Any, stop: Any) -> None:
    """Child process: one VTP subscriber per user; reports how many events each received."""
    subscribers = [VtpTransport(f"{url}?token={token}").open_subscriber() for token in tokens]
    received = [0] * len(subscribers)
    quiet_since = time.monotonic()
    while not (stop.is_set() and time.monotonic() - quiet_since > 1.0):
        got = False
        for i, subscriber in enumerate(subscribers):
            while subscriber.poll(0.0) is not None:
                received[i] += 1
                got = True
        if got:
            quiet_since = time.monotonic()
        else:
            time.sleep(0.02)
    for subscriber in subscribers:
        subscriber.close()
    counts.put(received)


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e3, 3)


def run_minibroker_bench(
    bootstrap_servers: str,
    *,
    n_filters: int = 100,
    n_alerts: int = 10_000,
    users: int = 10,
    seed: int = 1,
    repeats: int = 5,
    announce: Any = print,
) -> dict[str, Any]:
    announce(f"simulating a visit of {n_alerts:,} alerts...")
    alerts = alert_pool(n_alerts, seed)
    texts = benchmark_filters(n_filters, alerts, seed)
    workdir = Path(tempfile.mkdtemp(prefix="alertbench-minibroker-"))
    store = MiniBrokerStore(workdir / "mb.sqlite")
    per_user = -(-n_filters // users)
    tokens = {f"user{u:02d}": "" for u in range(users)}
    for name in tokens:
        tokens[name] = store.add_user(name, max_filters=per_user)
    for i, text in enumerate(texts):
        store.add_filter(tokens[f"user{i % users:02d}"], f"f{i:03d}", text)
    compiled = [compile_filter(text, store.catalog) for text in texts]

    codec = AvroSerializer()
    payloads = [codec.dumps(alert) for alert in alerts]
    paths = {info.path for f in compiled for info in f.filter.fields}
    # What the service decodes: the columns its filters read, and the visits (MiniBroker.reload).
    fields = columns_read(compiled) | {"diaSource.visit"}

    # 1. Evaluation alone: the filters' columns (from the encoded visit by columnar decode
    # projected onto those columns, as the service builds them; and from decoded dicts, the
    # reference path), then every filter.
    announce(f"evaluating {n_filters} filters over the visit, {repeats} times...")
    columns_s, dict_columns_s, filters_s, total_s, selected = [], [], [], [], []
    unprojected_s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        columns = VisitColumns.from_decoded(decode_columns(payloads, fields=fields))
        for f in compiled:
            for info in f.filter.fields:
                columns.get(info)
        t1 = time.perf_counter()
        masks = [f.select(columns) for f in compiled]
        t2 = time.perf_counter()
        from_dicts = VisitColumns(alerts)
        for f in compiled:
            for info in f.filter.fields:
                from_dicts.get(info)
        t3 = time.perf_counter()
        columns_s.append(t1 - t0)
        filters_s.append(t2 - t1)
        total_s.append(t2 - t0)
        dict_columns_s.append(t3 - t2)
        selected = [int(m.sum()) for m in masks]
        reference = [int(f.select(from_dicts).sum()) for f in compiled]
        if reference != selected:
            raise AssertionError("columnar decode and dicts select different alerts")
        del columns, from_dicts
        t4 = time.perf_counter()
        decode_columns(payloads)  # every column: what the projection saves
        unprojected_s.append(time.perf_counter() - t4)

    # 2. Decoding one alert in full (to a dict, as delivered alerts are) vs in a columnar batch,
    # in full and projected onto the filters' columns (as the service decodes a batch).
    sample = payloads[: min(len(payloads), 2000)]
    full_s, columnar_s, projected_s = [], [], []
    for _ in range(3):
        t0 = time.perf_counter()
        for payload in sample:
            codec.loads(payload)
        t1 = time.perf_counter()
        decode_columns(sample)
        t2 = time.perf_counter()
        decode_columns(sample, fields=fields)
        t3 = time.perf_counter()
        full_s.append((t1 - t0) / len(sample))
        columnar_s.append((t2 - t1) / len(sample))
        projected_s.append((t3 - t2) / len(sample))

    # 3. The service, reading the visit from Kafka and delivering to connected users.
    announce("publishing the visit to Kafka and running the mini-broker over it...")
    topic = f"minibroker-bench-{time.time_ns()}"
    transport = KafkaTransport(f"kafka://{bootstrap_servers}/{topic}")
    transport.prepare(partitions=1)
    publisher = transport.open_publisher()
    for alert, payload in zip(alerts, payloads, strict=True):
        publisher.publish(Envelope(payload, codec.content_type, alert["diaSourceId"]))
    publisher.flush(120)
    vtp = VtpUserStreams(store.authenticate)
    kafka_out = KafkaUserTopics(f"kafka://{bootstrap_servers}")
    for name in tokens:
        kafka_out.ensure_user(name)
    # The users' VTP subscribers run in a process of their own, as real users' would: parsing
    # their VOEvents must not share the service's interpreter (and its GIL).
    context = multiprocessing.get_context("spawn")
    counts: Any = context.Queue()
    stop = context.Event()
    users_process = context.Process(
        target=_vtp_users, args=(vtp.url, list(tokens.values()), counts, stop), daemon=True
    )
    users_process.start()
    deadline = time.monotonic() + 60
    while any(not vtp.broker.subscribers_of(n) for n in tokens) and time.monotonic() < deadline:
        time.sleep(0.05)
    broker = MiniBroker(store, [vtp, kafka_out], codec)
    source = transport.open_subscriber(Start.earliest(), group="minibroker-bench")
    stats = broker.run(SubscriberInput(source), max_alerts=n_alerts, duration=600)
    source.close()
    stop.set()
    received = counts.get(timeout=60)
    users_process.join(30)
    vtp.close()
    kafka_out.close()
    store.close()
    service = stats.as_dict()
    visit_seconds = (
        n_alerts / service["alerts_per_second"] if service["alerts_per_second"] else None
    )
    return {
        "filters": n_filters,
        "users": users,
        "alerts": n_alerts,
        "repeats": repeats,
        # The native engine parses a large batch on two threads unless told otherwise.
        "native_threads": os.environ.get("ALERTBENCH_NATIVE_THREADS", "auto"),
        "filter_texts": texts,
        "selected_per_filter": selected,
        "evaluation_ms": {
            "columns_median": _median_ms(columns_s),
            "columns_all": [round(t * 1e3, 3) for t in columns_s],
            "columns_unprojected_median": _median_ms(unprojected_s),
            "columns_decoded": len(fields),
            "columns_from_dicts_median": _median_ms(dict_columns_s),
            "filters_median": _median_ms(filters_s),
            "total_median": _median_ms(total_s),
            "total_all": [round(t * 1e3, 3) for t in total_s],
            "ns_per_alert_per_filter": round(
                statistics.median(filters_s) / n_alerts / n_filters * 1e9, 2
            ),
        },
        "decode_us_per_alert": {
            "full_median": round(statistics.median(full_s) * 1e6, 1),
            "columnar_median": round(statistics.median(columnar_s) * 1e6, 1),
            "projected_median": round(statistics.median(projected_s) * 1e6, 1),
            "fields_read_by_filters": len(paths),
        },
        "service": service,
        "service_visit_seconds": round(visit_seconds, 2) if visit_seconds else None,
        "service_over_lsst_rate": round(service["alerts_per_second"] / LSST_RATE, 2)
        if service["alerts_per_second"]
        else None,
        "vtp_events_received": sum(received),
        "kafka_delivered": sum(kafka_out.delivered.values()),
        "environment": environment(),
    }


def write(result: dict[str, Any], out_dir: Path) -> Path:
    """results.json (kind ``minibroker``, the one results schema) and report.md from it."""
    from alertbench.harness.report import render as report
    from alertbench.harness.report import results as schema

    schema.write_results(out_dir / schema.RESULTS_FILE, "minibroker", result)
    return report.write_report(out_dir)


def render(r: dict[str, Any]) -> str:
    """The Markdown report, from the JSON alone: report/render.py."""
    from alertbench.harness.report.render import render as render_doc

    return render_doc(r)
