"""Stock Comet 3.1.0 subscribers against the mini-broker's per-user VTP ports (IP allow-lists).

Run by ``tests/integration/test_comet_subscriber.py`` as
``unshare -n python tests/support/comet_subscriber.py COMET_VENV WORKDIR``: Comet binds every
interface and cannot be told otherwise, so it runs where loopback is the only interface (which
also gives this script 127.0.0.2 to connect from). The mini-broker is the real one (store,
filters, :class:`VtpUserStreams`) fed a visit of simulated alerts directly, without Kafka. One
JSON object with what was observed goes to stdout; the test asserts on it.

* alice: her own port, allowing 127.0.0.1/32; a Comet subscriber connects from 127.0.0.1 with
  no token (Comet has none to give) and saves what it receives with its own ``--save-event``.
* bob: the token port, as before, with our own subscriber; his filter selects the alerts
  alice's does not, so any mix-up shows.
* carol: her own port allowing only 127.0.0.2/32; a Comet subscriber connecting from 127.0.0.1
  must get nothing; a raw connection from 127.0.0.1 is refused at once, one from 127.0.0.2
  admitted.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from alertbench.harness.minibroker_io import VtpUserStreams
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.refimpl.codecs.voevent import VoeventSerializer
from alertbench.refimpl.minibroker import MiniBroker, MiniBrokerStore
from alertbench.transports.servers.comet import twistd_command
from alertbench.transports.vtp import REPLY_FRAME, VtpTransport, alert_id_of, parse_message
from alertbench.transports.vtp import read_frame as read_vtp_frame
from lxml import etree

from alertbench.errors import FrameError
from alertbench.xmlsafe import voevent_xsd

ALICE = "diaSource.snr > 10"
BOB = "diaSource.snr <= 10"
CAROL = "diaSource.snr > 0"


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def comet_subscriber(venv: Path, work: Path, name: str, port: int) -> tuple[subprocess.Popen, Path]:
    saved, eventdb = work / f"{name}-saved", work / f"{name}-db"
    saved.mkdir()
    eventdb.mkdir()
    args = [
        f"--local-ivo=ivo://example.test/{name}",
        f"--remote=127.0.0.1:{port}",
        "--save-event",
        f"--save-event-directory={saved}",
        f"--eventdb={eventdb}",
    ]
    log = (work / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        twistd_command(venv, args), stdout=log, stderr=subprocess.STDOUT, cwd=work
    )
    return proc, saved


def raw_connection(port: int, source: str) -> dict:
    """Connect from ``source``: what the port sends within 5 s and whether it then closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
        try:
            frame = read_vtp_frame(s, REPLY_FRAME, deadline=time.monotonic() + 5)
            message = parse_message(frame, REPLY_FRAME)
            first = {"role": message.role, "result": message.result}
        except (OSError, FrameError) as exc:
            first = {"error": type(exc).__name__}
        try:
            closed = s.recv(1) == b""
        except OSError:
            closed = True
    return {"first": first, "closed": closed}


def saved_events(folder: Path) -> list[dict]:
    found = []
    for path in sorted(folder.iterdir()):
        root = etree.fromstring(path.read_bytes())
        found.append(
            {"id": alert_id_of(root), "xsd_valid": bool(voevent_xsd().validate(root)),
             "bytes": path.read_bytes()}
        )  # fmt: skip
    return found


def main() -> None:
    venv, work = Path(sys.argv[1]), Path(sys.argv[2])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    config = SimulationConfig(seed=33, alerts_per_visit_mean=40, alerts_per_visit_sigma=0)
    alerts = list(AlertSimulator(config).visit(0).alerts())
    codec, voevent = AvroSerializer(), VoeventSerializer(mode="compact")

    store = MiniBrokerStore(work / "mb.sqlite")
    tokens = {
        name: store.add_user(name, alerts_per_visit=1000) for name in ("alice", "bob", "carol")
    }
    for name, expression in (("alice", ALICE), ("bob", BOB), ("carol", CAROL)):
        store.add_filter(tokens[name], "mine", expression)
    store.set_vtp_port("alice", 0, ["127.0.0.1/32"])
    store.set_vtp_port("carol", 0, ["127.0.0.2/32"])
    vtp = VtpUserStreams(store.authenticate, user_ports=store.vtp_ports, revision=store.revision)
    ports = vtp.user_ports()
    procs = []
    out: dict = {"ports": ports, "port_errors": vtp.port_errors}
    try:
        alice_proc, alice_saved = comet_subscriber(venv, work, "comet-alice", ports["alice"])
        carol_proc, carol_saved = comet_subscriber(venv, work, "comet-carol", ports["carol"])
        procs += [alice_proc, carol_proc]
        bob = VtpTransport(f"{vtp.url}?token={tokens['bob']}").open_subscriber()
        counters = vtp.broker.counters
        out["carol_raw_from_127_0_0_1"] = raw_connection(ports["carol"], "127.0.0.1")
        admitted = socket.create_connection(
            ("127.0.0.1", ports["carol"]), timeout=5, source_address=("127.0.0.2", 0)
        )
        out["carol_raw_from_127_0_0_2_admitted"] = wait_for(
            lambda: vtp.broker.subscribers_of("carol") == 1, 10
        )
        admitted.close()
        wait_for(lambda: vtp.broker.subscribers_of("carol") == 0, 10)
        out["comet_alice_connected"] = wait_for(lambda: vtp.broker.subscribers_of("alice") == 1, 60)
        # Comet's carol subscriber, turned away at least once beyond the raw connection above.
        out["comet_carol_refused"] = wait_for(
            lambda: counters()["subscribers_refused_address"] >= 2, 60
        )
        wait_for(lambda: vtp.broker.subscribers_of("bob") == 1, 10)

        broker = MiniBroker(store, [vtp], codec)
        broker.process([codec.dumps(a) for a in alerts])
        expected = {
            name: sorted(a["diaSourceId"] for a in alerts if wants(a["diaSource"]["snr"]))
            for name, wants in (
                ("alice", lambda snr: snr is not None and snr > 10),
                ("bob", lambda snr: snr is not None and snr <= 10),
            )
        }
        wait_for(lambda: len(list(alice_saved.iterdir())) >= len(expected["alice"]), 60)
        got_bob = []
        deadline = time.monotonic() + 30
        while len(got_bob) < len(expected["bob"]) and time.monotonic() < deadline:
            received = bob.poll(1.0)
            if received is not None:
                got_bob.append(received.envelope.alert_id)
        time.sleep(2.0)  # anything extra, or anything for carol, would have arrived by now
        bob.close()
        saved = saved_events(alice_saved)
        by_id = {a["diaSourceId"]: a for a in alerts}
        out["alice"] = {
            "expected": expected["alice"],
            "saved": sorted(e["id"] for e in saved),
            "all_xsd_valid": all(e["xsd_valid"] for e in saved),
            "same_bytes_as_the_broker_sent": all(
                e["bytes"] == voevent.dumps(by_id[e["id"]]) for e in saved if e["id"] in by_id
            ),
            "sessions_acks": [s.acks for s in vtp.broker._sessions if s.key == "alice"],
        }
        out["bob"] = {"expected": expected["bob"], "received": sorted(got_bob)}
        out["carol"] = {
            "matched": int(broker.stats.matched["carol"]),
            "saved": len(list(carol_saved.iterdir())),
            "no_subscriber": vtp.no_subscriber["carol"],
            "delivered": vtp.delivered["carol"],
        }
        out["counters"] = counters()
        out["delivered"] = dict(vtp.delivered)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        vtp.close()
        store.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
