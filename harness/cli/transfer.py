"""The users' commands: publish an alert file, subscribe to a stream, send VOEvents to a broker.

``alertbench publish FILE URL`` and ``alertbench subscribe URL`` are what ``hop publish`` /
``hop subscribe`` and ``fink_consumer --save`` are for their services, over every transport
alertbench has (the URL's scheme picks it); ``alertbench vtp send FILE...`` is comet-sendvo.
Each is a thin layer: :mod:`alertbench.harness.transfer` turns files into messages and
messages into files, the transport moves them, and this module parses, loops and prints.

Where the publisher binds and subscribers connect (``tcp://``, ``zmq+tcp://``) there is nobody
to receive what is published before a subscriber connects, so ``publish`` first waits for
``--wait-subscribers`` of them (1 by default there, up to ``--wait-timeout`` seconds), then
publishes, then keeps the port open until they have read everything (flush).
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from alertbench.harness.cli.console import (
    console,
    existing_file,
    out,
    output_file,
    positive_float,
    positive_int,
    progress,
)
from alertbench.harness.cli.kafka_options import add_kafka_client_options, kafka_transport_options
from alertbench.refimpl.codecs.base import SERIALIZERS, Alert

from alertbench.errors import AlertbenchError, ConfigError, TransportError

NOT_ALL_DELIVERED = 1
"""Exit status when something was not acknowledged (publish) or refused (vtp send)."""


def _start_type(text: str) -> Any:
    from alertbench.harness.transfer import parse_start

    try:
        return parse_start(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--from {text!r}: ")) from None


_start_type.__name__ = "start position"


def _rate_type(text: str) -> float:
    from alertbench.harness.transfer import parse_rate

    try:
        return parse_rate(text)
    except ConfigError:
        raise argparse.ArgumentTypeError(
            f"expected alerts per second, e.g. 100/s: {text!r}"
        ) from None


_rate_type.__name__ = "rate"


def _url_type(text: str) -> str:
    """A transport URL whose scheme is registered (checked when parsed: a typo is one line)."""
    from alertbench.transports.base import TRANSPORTS, parse_url

    try:
        scheme, *_ = parse_url(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if scheme not in TRANSPORTS or scheme == "memory":
        known = ", ".join(f"{s}://" for s in TRANSPORTS if s != "memory")
        raise argparse.ArgumentTypeError(f"no transport for {scheme}:// (known: {known})")
    return text


_url_type.__name__ = "transport URL"


def open_transport(url: str, args: argparse.Namespace) -> Any:
    """The transport for ``url``; Kafka client options only where the URL is Kafka's."""
    from alertbench.transports.base import get_transport, parse_url

    options = kafka_transport_options(args)
    scheme, *_ = parse_url(url)
    if options and scheme != "kafka":
        raise ConfigError(f"the Kafka client options are for kafka:// URLs, not {scheme}://")
    return get_transport(url, **options)


class Stop:
    """SIGTERM and SIGINT set a flag the loops read, so a stop is clean: what was received is
    written and committed, the transport closed, and the exit status 0."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Stop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def __bool__(self) -> bool:
        return self.event.is_set()


# --------------------------------------------------------------------------- publish


def cmd_publish(args: argparse.Namespace) -> int:
    from alertbench.harness.transfer import file_messages
    from alertbench.transports.base import CountsSubscribers, Envelope

    transport = open_transport(args.url, args)
    container, codec, messages = file_messages(args.file, args.serializer)
    for message in messages[:1]:
        if not transport.capabilities.carries(message.content_type):
            raise ConfigError(
                f"{args.url} carries only {', '.join(transport.capabilities.content_types)}; "
                f"{args.file} is {codec}: give --serializer"
            )
    transport.prepare()
    publisher = transport.open_publisher()
    total = len(messages) * args.loop
    try:
        binds = isinstance(publisher, CountsSubscribers)
        wanted = args.wait_subscribers if args.wait_subscribers is not None else int(binds)
        if wanted and binds:
            console.print(f"waiting for {wanted} subscriber(s) on {args.url} ...")
            publisher.wait_for_subscribers(wanted, timeout=args.wait_timeout)
        interval = 1.0 / args.rate if args.rate else 0.0
        started = time.monotonic()
        sent = 0
        with Stop() as stop, progress() as bar:
            task = bar.add_task(f"{codec} -> {transport.url}", total=total)
            for _ in range(args.loop):
                for message in messages:
                    if stop:
                        break
                    intended_ns = None
                    if interval:
                        due = started + sent * interval
                        intended_ns = time.time_ns() + int((due - time.monotonic()) * 1e9)
                        # Wait on the stop flag, not a sleep: at a slow rate a SIGTERM must
                        # end the run now, not after the gap, and send nothing more.
                        delay = due - time.monotonic()
                        if delay > 0 and stop.event.wait(delay):
                            break
                    publisher.publish(
                        Envelope(
                            payload=message.payload,
                            content_type=message.content_type,
                            alert_id=message.alert_id,
                            t_sent_ns=time.time_ns(),
                            t_intended_ns=intended_ns or 0,
                            sequence=sent,
                        )
                    )
                    sent += 1
                    bar.advance(task)
        left = publisher.flush(args.flush_timeout)
        counts = publisher.counters()
    finally:
        publisher.close()
    refused = int(counts.get("refused", 0))
    acked = int(counts.get("acknowledged", sent - left - refused))
    missing = sent - acked
    elapsed = time.monotonic() - started
    # Without acknowledgements (tcp, zmq) the count is what was flushed to the subscribers.
    acks = transport.capabilities.acknowledgement != "none"
    word = "acknowledged" if acks else "flushed to subscribers (no acknowledgements)"
    out.print(
        f"sent {sent:,} alerts from {args.file} ({container}, {codec}) to {transport.url} in "
        f"{elapsed:,.1f} s; {word} {acked:,}"
        + (f"; NOT {word.split()[0]} {missing:,}" if missing else "")
    )
    return NOT_ALL_DELIVERED if missing else 0


# --------------------------------------------------------------------------- subscribe


def cmd_subscribe(args: argparse.Namespace) -> int:
    from alertbench.harness.transfer import Decoder, saved_name, summary, summary_line
    from alertbench.refimpl.codecs.files import write_alert_file

    transport = open_transport(args.url, args)
    kafka = transport.url.startswith("kafka://")
    options: dict[str, Any] = {}
    if kafka:
        options = {"group": args.group, "commit": "manual"}
    elif args.group:
        raise ConfigError("--group is for kafka:// URLs (consumer groups)")
    subscriber = transport.open_subscriber(args.start, **options)
    decoder = Decoder()
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
    kept: list[Alert] = []
    kept_as: str | None = None
    got = bad = 0
    quiet = args.save is not None or args.output is not None
    reason = "limit"
    try:
        with Stop() as stop, progress() as bar:
            task = bar.add_task(f"from {transport.url}", total=args.limit)
            idle_since = time.monotonic()
            while args.limit is None or got < args.limit:
                if stop:
                    reason = "signal"
                    break
                if time.monotonic() - idle_since >= args.timeout:
                    reason = "idle"
                    break
                received = subscriber.poll(min(0.5, args.timeout))
                if received is None:
                    continue
                idle_since = time.monotonic()
                try:
                    name, alert = decoder.decode(received)
                except AlertbenchError as exc:
                    bad += 1
                    console.print(f"skipped a message at {received.origin or '?'}: {exc}")
                    continue
                got += 1
                if args.save:
                    (args.save / saved_name(alert, received, name, args.save)).write_bytes(
                        received.envelope.payload
                    )
                if args.output:
                    if kept_as not in (None, name):
                        raise AlertbenchError(
                            f"-o {args.output}: the stream mixes {kept_as} and {name}; "
                            "use --save DIR for a mixed stream"
                        )
                    kept_as = name
                    kept.append(alert)
                if not quiet:
                    out.print(summary_line(summary(alert, received)), highlight=False)
                bar.advance(task)
                if kafka and args.save and got % 100 == 0:
                    subscriber.commit()  # what is written is safe: resume after it
        if args.output and kept_as is not None:
            write_alert_file(args.output, kept, kept_as)
        if kafka:
            subscriber.commit()
    finally:
        subscriber.close()
    where = f" to {args.save}" if args.save else ""
    where += (
        f" and {args.output}"
        if args.output and where
        else (f" to {args.output}" if args.output else "")
    )
    why = {"limit": "limit reached", "idle": f"idle for {args.timeout:g} s", "signal": "stopped"}
    console.print(
        f"received {got:,} alerts from {transport.url}{where} ({why[reason]})"
        + (f"; skipped {bad:,} undecodable" if bad else ""),
        highlight=False,
    )
    return 0


# --------------------------------------------------------------------------- vtp send


def _events(path: Path, mode: str) -> Iterator[tuple[str, bytes, int]]:
    """(label, VOEvent bytes, alert id) of one file: an XML VOEvent as it is, any other alert
    file converted to VOEvent 2.0 one alert at a time, in ``mode`` (compact by default: a
    stock Comet drops frames of 100,000 bytes or more without a word, and embedded or
    referenced light curves are mostly larger)."""
    from alertbench.harness.transfer import alert_id_of, file_messages
    from alertbench.refimpl.codecs.base import get_serializer, serializer_for_message

    data = path.read_bytes()
    try:
        own = serializer_for_message(data)
    except AlertbenchError:
        own = ""
    if own == "voevent":
        alert = get_serializer("voevent").loads(data)
        yield str(path), data, alert_id_of(alert)
        return
    _, _, messages = file_messages(path, "voevent", {"mode": mode})
    for i, message in enumerate(messages):
        yield f"{path}[{i}]", message.payload, message.alert_id


def cmd_vtp_send(args: argparse.Namespace) -> int:
    from alertbench.transports.base import Envelope
    from alertbench.transports.vtp import CONTENT_TYPE, VtpTransport

    url = f"vtp://{args.host}:{args.port}?receive={args.port}"
    publisher = VtpTransport(url).open_publisher(timeout=args.timeout)
    acks = naks = 0
    for path in args.files:
        for label, payload, alert_id in _events(path, args.mode):
            before = len(publisher.naks)
            try:
                publisher.publish(
                    Envelope(payload=payload, content_type=CONTENT_TYPE, alert_id=alert_id)
                )
            except TransportError as exc:
                naks += 1
                out.print(f"no answer {label} (alert {alert_id}): {exc}", highlight=False)
                continue
            if len(publisher.naks) > before:
                naks += 1
                out.print(
                    f"nak {label} (alert {alert_id}): {publisher.naks[-1][1]}", highlight=False
                )
            else:
                acks += 1
                out.print(f"ack {label} (alert {alert_id})", highlight=False)
    out.print(f"sent {acks + naks:,} events to {args.host}:{args.port}: {acks:,} ack, {naks:,} nak")
    return NOT_ALL_DELIVERED if naks else 0


# --------------------------------------------------------------------------- parsers


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pub = sub.add_parser(
        "publish",
        help="publish an alert file to a stream (any transport URL)",
        description="Publish every alert of an alert file (an Avro container, a frames file, "
        "or one message) to a transport URL: kafka://HOST:PORT/TOPIC, grpc://HOST:PORT, "
        "tcp://HOST:PORT, zmq+tcp://HOST:PORT, vtp://HOST:PORT?receive=PORT. The file's own "
        "messages are sent byte for byte unless --serializer re-encodes them. Exit status 1 "
        "when any alert was not acknowledged. For tcp:// and zmq+tcp:// this command binds the "
        "port: it waits for --wait-subscribers (default 1) to connect, then publishes.",
    )
    pub.add_argument("file", type=existing_file, help="the alert file to publish")
    pub.add_argument("url", type=_url_type, help="where to publish (a transport URL)")
    pub.add_argument(
        "--rate",
        type=_rate_type,
        default=None,
        help="alerts per second, e.g. 100/s (default: as fast as the transport takes them)",
    )
    pub.add_argument(
        "--loop", type=positive_int, default=1, help="publish the file this many times (default 1)"
    )
    pub.add_argument(
        "--serializer",
        choices=sorted(SERIALIZERS),
        default=None,
        help="re-encode every alert (default: the file's own encoding; avro for a container)",
    )
    pub.add_argument(
        "--wait-subscribers",
        type=int,
        default=None,
        metavar="N",
        help="where the publisher binds (tcp, zmq): wait for N subscribers first (default 1)",
    )
    pub.add_argument(
        "--wait-timeout",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="how long to wait for them, seconds (default 30)",
    )
    pub.add_argument(
        "--flush-timeout",
        type=positive_float,
        default=60.0,
        metavar="S",
        help="how long to wait for acknowledgements at the end, seconds (default 60)",
    )
    add_kafka_client_options(pub)
    pub.set_defaults(func=cmd_publish)

    subp = sub.add_parser(
        "subscribe",
        help="receive alerts from a stream: print, save each message, or write an alert file",
        description="Receive alerts from a transport URL and decode each by its content type. "
        "Without --save or -o, print one line per alert. Stops at --limit, after --timeout "
        "seconds without a message, or on SIGINT/SIGTERM; Kafka offsets are committed for "
        "what was received.",
    )
    subp.add_argument("url", type=_url_type, help="where to subscribe (a transport URL)")
    subp.add_argument(
        "--from",
        dest="start",
        type=_start_type,
        default=None,
        metavar="WHERE",
        help="earliest, latest (default), an offset, or an ISO time (replaying transports)",
    )
    subp.add_argument("--limit", type=positive_int, default=None, help="stop after N alerts")
    subp.add_argument("--group", default=None, help="Kafka consumer group (default: a new one)")
    subp.add_argument(
        "--timeout",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="stop after S seconds without a message (default 30)",
    )
    subp.add_argument(
        "--save",
        type=Path,
        default=None,
        metavar="DIR",
        help="write each message as received, one file per alert: ALERTID.avro/.xml/...",
    )
    subp.add_argument(
        "-o",
        "--output",
        type=output_file,
        default=None,
        help="write the alerts to one alert file (Avro container for avro, frames otherwise)",
    )
    add_kafka_client_options(subp)
    subp.set_defaults(func=cmd_subscribe)

    vtp = sub.add_parser("vtp", help="VOEvent Transport Protocol tools (vtp send)")
    vsub = vtp.add_subparsers(dest="vtp_command", metavar="COMMAND", required=True)
    send = vsub.add_parser(
        "send",
        help="send VOEvents to a broker's receive port as an author (as comet-sendvo)",
        description="Send each VOEvent XML file (or every alert of any alert file, converted "
        "to VOEvent 2.0) to a VTP broker's receive port; print ack or nak per event; exit "
        "status 1 if any was refused.",
    )
    send.add_argument("files", nargs="+", type=existing_file, metavar="FILE")
    send.add_argument("--host", default="127.0.0.1", help="the broker (default 127.0.0.1)")
    send.add_argument("--port", type=positive_int, default=8098, help="its receive port (8098)")
    send.add_argument(
        "--timeout", type=positive_float, default=30.0, help="seconds per event (default 30)"
    )
    send.add_argument(
        "--mode",
        choices=("compact", "reference", "embed"),
        default="compact",
        help="VOEvent mode for files that are not VOEvent XML (default compact: under the "
        "100 KB frames stock VTP peers accept)",
    )
    send.set_defaults(func=cmd_vtp_send)


__all__ = ["add_parsers", "cmd_publish", "cmd_subscribe", "cmd_vtp_send"]
