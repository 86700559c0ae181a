"""``alertbench minibroker ...``: run the mini-broker, manage its users and filters, benchmark it.

Users act with their token, taken from ``--token`` or, better (it stays out of the process list
and shell history), the ``ALERTBENCH_TOKEN`` environment variable.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path
from typing import Any

from alertbench.harness.cli.console import console, out, positive_float, positive_int
from alertbench.refimpl.minibroker.archive import DEFAULT_KEEP

from alertbench.errors import AlertbenchError, ConfigError

DEFAULT_DB = Path("minibroker.sqlite")


def db_file(text: str) -> Path:
    """The SQLite store: a file (made if missing), never a folder."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; give the store's file name")
    return path


def _store(args: argparse.Namespace) -> Any:
    from alertbench.refimpl.alert.schema import load_schema
    from alertbench.refimpl.minibroker import MiniBrokerStore
    from alertbench.refimpl.minibroker.filters import FieldCatalog

    return MiniBrokerStore(args.db, FieldCatalog(load_schema(args.schema_version)))


def _token(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get("ALERTBENCH_TOKEN", "")
    if not token:
        raise AlertbenchError("give your token with --token or the ALERTBENCH_TOKEN variable")
    return token


def cmd_user_add(args: argparse.Namespace) -> int:
    with _store(args) as store:
        token = store.add_user(
            args.name, alerts_per_visit=args.alerts_per_visit, max_filters=args.max_filters
        )
    if args.kafka:
        from alertbench.harness.minibroker_io import KafkaUserTopics

        KafkaUserTopics(args.kafka, user=args.kafka_user, password=args.kafka_password).grant(
            args.name, token
        )
        console.print(f"Kafka: {args.name!r} may read topic minibroker.{args.name} with this token")
    console.print(f"user {args.name!r} created; their token (shown once, keep it secret):")
    print(token)  # alone on stdout, for scripts
    return 0


def cmd_user_rotate(args: argparse.Namespace) -> int:
    apply = None
    if args.kafka:
        from alertbench.harness.minibroker_io import KafkaUserTopics

        topics = KafkaUserTopics(args.kafka, user=args.kafka_user, password=args.kafka_password)
        apply = functools.partial(topics.rotate, args.name)
    with _store(args) as store:
        token = store.rotate_token(args.name, apply=apply)
    if args.kafka:
        console.print(f"Kafka: {args.name!r} now logs in with the new token only")
    console.print(f"user {args.name!r}: old token revoked; new token (shown once, keep it secret):")
    print(token)  # alone on stdout, for scripts
    return 0


def port_number(text: str) -> int:
    """A TCP port, 0 meaning "one the service picks when it starts"."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {value}")
    return value


def http_url(text: str) -> str:
    """An http(s) URL with a host, checked now (one line, exit 2, for anything else)."""
    from urllib.parse import urlsplit

    split = urlsplit(text)
    if split.scheme not in ("http", "https") or not split.netloc or split.query or split.fragment:
        raise argparse.ArgumentTypeError(
            f"expected http(s)://HOST[:PORT][/PATH] with no query, got {text!r}"
        )
    return text


def allow_block(text: str) -> str:
    """An address or CIDR block, checked now (one line, exit 2, for a bad one)."""
    from alertbench.refimpl.minibroker.store import parse_allow_list

    try:
        return str(parse_allow_list([text])[0])
    except AlertbenchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_user_vtp_port(args: argparse.Namespace) -> int:
    """A user's own VTP port with an IP allow-list: for stock subscribers (Comet) that cannot
    answer with a token. A running service applies it within seconds (it follows the store)."""
    with _store(args) as store:
        if args.remove:
            store.remove_vtp_port(args.name)
            out.print(f"user {args.name!r}: own VTP port removed", markup=False)
            return 0
        if args.port is None or not args.allow:
            raise ConfigError("minibroker user vtp-port: give --port and --allow, or --remove")
        grant = store.set_vtp_port(args.name, args.port, args.allow)
    where = f"port {grant.port}" if grant.port else "a port the service picks (see its log)"
    allowed = ", ".join(str(n) for n in grant.allow)
    out.print(
        f"user {args.name!r}: VTP subscribers from {allowed} get their stream on {where}",
        markup=False,
    )
    return 0


def cmd_user_vtp_ports(args: argparse.Namespace) -> int:
    with _store(args) as store:
        for grant in store.vtp_ports():  # tab-separated, for scripts
            print(f"{grant.user}\t{grant.port}\t{','.join(str(n) for n in grant.allow)}")
    return 0


def cmd_filter_add(args: argparse.Namespace) -> int:
    with _store(args) as store:
        stored = store.add_filter(_token(args), args.name, args.expression)
    out.print(f"filter {stored.name!r} registered for {stored.user!r}", markup=False)
    return 0


def cmd_filter_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        for stored in store.list_filters(_token(args)):
            print(f"{stored.name}\t{stored.expression}")  # tab-separated, for scripts
    return 0


def cmd_filter_remove(args: argparse.Namespace) -> int:
    with _store(args) as store:
        store.remove_filter(_token(args), args.name)
    out.print(f"filter {args.name!r} removed", markup=False)
    return 0


def cmd_filter_check(args: argparse.Namespace) -> int:
    from alertbench.refimpl.alert.schema import load_schema
    from alertbench.refimpl.minibroker.filters import FieldCatalog, parse_filter

    checked = parse_filter(args.expression, FieldCatalog(load_schema(args.schema_version)))
    fields = ", ".join(f.name for f in checked.fields)
    out.print(f"ok: reads {fields}", markup=False, highlight=False)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The service over a Kafka stream, at least once: the consumer group's offsets are
    committed only after a batch reached every output, and a restart resumes from there."""
    from contextlib import ExitStack

    from alertbench.harness.minibroker_io import (
        KafkaUserTopics,
        SubscriberInput,
        VtpUserStreams,
        kafka_start,
    )
    from alertbench.refimpl.codecs.avro import AvroSerializer
    from alertbench.refimpl.codecs.voevent import VoeventSerializer
    from alertbench.refimpl.minibroker import MiniBroker
    from alertbench.refimpl.minibroker.archive import AlertArchive
    from alertbench.refimpl.minibroker.service import UndeliveredError
    from alertbench.transports.base import parse_url
    from alertbench.transports.kafka import KafkaTransport
    from alertbench.transports.servers.references import ReferenceServer

    scheme, bootstrap, topic, _ = parse_url(args.kafka)
    if scheme != "kafka" or not topic:
        raise ConfigError(f"--kafka {args.kafka!r}: give kafka://HOST:PORT/TOPIC of the stream")
    auth = {"user": args.kafka_user, "password": args.kafka_password}
    with ExitStack() as stack:
        store = stack.enter_context(_store(args))
        codec = AvroSerializer()
        archive = AlertArchive(
            args.archive or args.db.with_name(args.db.name + ".archive"),
            codec.loads,
            keep=args.archive_keep,
        )
        stack.callback(archive.close)
        references = ReferenceServer(archive, port=args.http_port).start()
        stack.callback(references.stop)
        base = args.references_url.rstrip("/") if args.references_url else references.url
        console.print(
            f"mini-broker: cutouts and light curves of the alerts sent over VTP at "
            f"{references.url} (the VOEvents' references say {base}), the newest "
            f"{args.archive_keep:,} kept in {archive.path}"
        )
        vtp = VtpUserStreams(
            store.authenticate,
            port=args.vtp_port,
            user_ports=store.vtp_ports,
            revision=store.revision,
            serializer=VoeventSerializer(mode="compact", reference_base=base),
            archive=archive,
        )
        stack.callback(vtp.close)
        for name, port in vtp.user_ports().items():
            console.print(f"mini-broker: user {name!r} has VTP port {port} (IP allow-list)")
        for name, why in vtp.port_errors.items():
            console.print(f"mini-broker: user {name!r}'s own VTP port is not served: {why}")
        outputs = [vtp, KafkaUserTopics(f"kafka://{bootstrap}", **auth)]
        broker = MiniBroker(store, outputs, codec)
        console.print(
            f"mini-broker: reading {args.kafka}; users subscribe over VTP at {vtp.url} "
            "(answering the broker's authenticate request with Param token) or read Kafka "
            f"topic minibroker.<user>"
        )
        stream = KafkaTransport(f"kafka://{bootstrap}/{topic}", **auth)
        # Manual commits: the core commits after each batch reached every output, never as
        # alerts are read; the group's commit is where a restart resumes.
        start = kafka_start(stream, args.group, from_earliest=args.from_earliest)
        source = stream.open_subscriber(start, group=args.group, commit="manual")
        stack.callback(source.close)
        console.print(f"mini-broker: consuming as group {args.group!r}, committing per batch")
        started = time.monotonic()

        def report(batch) -> None:
            console.print(
                f"[{time.monotonic() - started:7.1f} s] {batch.alerts:,} alerts, "
                f"{batch.evaluate_seconds * 1e3:.1f} ms to filter; delivered "
                f"{sum(batch.delivered.values())}, truncated {sum(batch.truncated.values())}"
            )

        try:
            stats = broker.run(
                SubscriberInput(source),
                max_alerts=args.max_alerts,
                duration=args.duration,
                idle_stop=args.idle_stop,
                on_batch=report,
                flush_timeout=args.flush_timeout,
            )
        except UndeliveredError as exc:
            console.print(f"mini-broker stopped: {exc}")
            print(json.dumps(broker.stats.as_dict(), sort_keys=True))
            return 1
    print(json.dumps(stats.as_dict(), sort_keys=True))  # one line of JSON, for scripts
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from alertbench.harness import minibroker_bench
    from alertbench.harness.cli.bench import write_run
    from alertbench.transports.servers.kafka_cluster import local_kafka

    with local_kafka(args.bootstrap_servers, announce=console.print) as (bootstrap, _):
        result = minibroker_bench.run_minibroker_bench(
            bootstrap,
            n_filters=args.filters,
            n_alerts=args.alerts,
            users=args.users,
            repeats=args.repeats,
            announce=console.print,
        )
    path = write_run(args.output, "minibroker", result, args)
    out.print(path.read_text(), markup=False, highlight=False)
    out.print(f"wrote {path}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from alertbench.harness.cli.console import output_folder

    mb = sub.add_parser(
        "minibroker",
        help="the mini-broker: user filters over the full stream, VOEvent/VTP and Kafka out",
        description="Rubin's 'simple filtering service': users register filters (a small, "
        "schema-checked expression language) with a token; the service applies them to the "
        "full Kafka stream and sends each user at most N alerts per visit as VOEvent 2.0 over "
        "VTP and as Avro on Kafka topic minibroker.<user>.",
    )
    mbsub = mb.add_subparsers(dest="minibroker_command", required=True)

    def common(p: argparse.ArgumentParser, token: bool = False) -> None:
        p.add_argument("--db", type=db_file, default=DEFAULT_DB, help="the SQLite store")
        p.add_argument(
            "--schema-version", default=None, help="alert schema filters are checked against"
        )
        if token:
            p.add_argument("--token", default=None, help="your token (or set ALERTBENCH_TOKEN)")

    def kafka_auth(p: argparse.ArgumentParser) -> None:
        p.add_argument("--kafka-user", default=None, help="SASL/SCRAM user for the service")
        p.add_argument("--kafka-password", default=os.environ.get("ALERTBENCH_KAFKA_PASSWORD"))

    user = mbsub.add_parser("user", help="operator: manage users").add_subparsers(
        dest="user_command", required=True
    )
    add = user.add_parser("add", help="create a user and print their token once")
    add.add_argument("name")
    add.add_argument("--alerts-per-visit", type=positive_int, default=20)
    add.add_argument("--max-filters", type=positive_int, default=10)
    add.add_argument(
        "--kafka", default=None, help="kafka://host:port of a SCRAM cluster: grant topic access"
    )
    kafka_auth(add)
    common(add)
    add.set_defaults(func=cmd_user_add)
    rotate = user.add_parser(
        "rotate", help="replace a user's token (and their Kafka password) and print it once"
    )
    rotate.add_argument("name")
    rotate.add_argument(
        "--kafka",
        default=None,
        help="kafka://host:port of the SCRAM cluster given to 'user add': replace the password",
    )
    kafka_auth(rotate)
    common(rotate)
    rotate.set_defaults(func=cmd_user_rotate)
    vport = user.add_parser(
        "vtp-port",
        help="give a user a VTP port of their own, open to listed addresses (no token: Comet)",
        description="Stock VTP subscribers such as Comet cannot answer the token port's "
        "authenticate request; on a user's own port the subscriber's address is its credential "
        "(Comet's allow-list model). Connections from other addresses are refused at once.",
    )
    vport.add_argument("name")
    vport.add_argument("--port", type=port_number, default=None, help="0: the service picks")
    vport.add_argument(
        "--allow",
        type=allow_block,
        action="append",
        default=[],
        help="address or CIDR block a subscriber may connect from (repeat for more)",
    )
    vport.add_argument("--remove", action="store_true", help="close the user's own port")
    common(vport)
    vport.set_defaults(func=cmd_user_vtp_port)
    vports = user.add_parser("vtp-ports", help="list users' own VTP ports and allow-lists")
    common(vports)
    vports.set_defaults(func=cmd_user_vtp_ports)

    filt = mbsub.add_parser("filter", help="users: manage your filters").add_subparsers(
        dest="filter_command", required=True
    )
    fadd = filt.add_parser("add", help="register a filter (checked against the schema)")
    fadd.add_argument("name")
    fadd.add_argument("expression", help="e.g. 'diaSource.snr > 10 and diaSource.band == \"g\"'")
    common(fadd, token=True)
    fadd.set_defaults(func=cmd_filter_add)
    flist = filt.add_parser("list", help="list your filters")
    common(flist, token=True)
    flist.set_defaults(func=cmd_filter_list)
    frm = filt.add_parser("remove", help="remove one of your filters")
    frm.add_argument("name")
    common(frm, token=True)
    frm.set_defaults(func=cmd_filter_remove)
    fcheck = filt.add_parser("check", help="check a filter without registering it")
    fcheck.add_argument("expression")
    fcheck.add_argument("--schema-version", default=None)
    fcheck.set_defaults(func=cmd_filter_check)

    serve = mbsub.add_parser("serve", help="run the service over a Kafka alert stream")
    serve.add_argument("--kafka", required=True, help="kafka://host:port/TOPIC of the full stream")
    serve.add_argument(
        "--group",
        default="minibroker-service",
        help="consumer group: its committed position is where a restart resumes, so keep it "
        "the same across restarts (on a secured cluster it starts with the --kafka-user's name "
        "and a hyphen)",
    )
    serve.add_argument(
        "--from-earliest",
        action="store_true",
        help="where the group has committed nothing yet, start at the oldest alert, not the "
        "newest (a group's commit is always resumed from)",
    )
    serve.add_argument(
        "--flush-timeout",
        type=positive_float,
        default=30.0,
        help="seconds the outputs have to confirm a batch; else stop without committing it",
    )
    serve.add_argument("--vtp-port", type=int, default=8099, help="VTP port users connect to")
    serve.add_argument(
        "--http-port",
        type=port_number,
        default=8098,
        help="HTTP port serving the cutouts and light curves the VOEvents refer to (0: any)",
    )
    serve.add_argument(
        "--references-url",
        type=http_url,
        default=None,
        help="the base the VOEvents' references say, if users reach the HTTP server under "
        "another name (a proxy); default its own http://127.0.0.1:PORT/cutouts",
    )
    serve.add_argument(
        "--archive",
        type=db_file,
        default=None,
        help="SQLite file keeping the alerts sent over VTP, for their references "
        "(default: the store's file name + .archive)",
    )
    serve.add_argument(
        "--archive-keep",
        type=positive_int,
        default=DEFAULT_KEEP,
        help="how many of the newest alerts sent the archive keeps (~130 KB each)",
    )
    serve.add_argument(
        "--duration", type=positive_float, default=None, help="stop after this many s"
    )
    serve.add_argument("--max-alerts", type=positive_int, default=None, help="stop after this many")
    serve.add_argument(
        "--idle-stop", type=positive_float, default=None, help="stop after s without alerts"
    )
    kafka_auth(serve)
    common(serve)
    serve.set_defaults(func=cmd_serve)

    bench = mbsub.add_parser(
        "bench", help="N filters over a full visit: evaluation time and service throughput"
    )
    bench.add_argument("--filters", type=positive_int, default=100)
    bench.add_argument("--users", type=positive_int, default=10)
    bench.add_argument("--alerts", type=positive_int, default=10_000)
    bench.add_argument("--repeats", type=positive_int, default=5)
    bench.add_argument("--bootstrap-servers", default=None, help="use this Kafka, start none")
    bench.add_argument("-o", "--output", type=output_folder, default=Path("out/minibroker"))
    bench.set_defaults(func=cmd_bench)
