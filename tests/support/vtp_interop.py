"""VTP interoperability scenarios against Comet, run inside a loopback-only network namespace.

Comet binds every interface and has no option to choose one, so
``tests/integration/test_vtp_interop.py`` runs this script as
``unshare -n python tests/support/vtp_interop.py COMET_VENV WORKDIR``: inside, the only interface
is loopback, and both Comet and our side live there. The script prints one JSON object with
what each scenario observed; the test asserts on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from alertbench.harness.vtp_bench import wait_port
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig
from alertbench.refimpl.codecs.voevent import VoeventSerializer
from alertbench.transports.base import Envelope, TransportError
from alertbench.transports.servers.comet import broker_args, twistd_command
from alertbench.transports.servers.kafka_cluster import free_port
from alertbench.transports.vtp import VtpBroker, VtpTransport

VOEVENT_TYPE = "application/x-voevent+xml"


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def twistd(venv: Path, work: Path, name: str, args: list[str], raised: bool = False):
    log = (work / f"{name}.log").open("wb")
    command = twistd_command(venv, args, raised)
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=work)


def comet_broker(venv: Path, work: Path, name: str, raised: bool = False):
    receive, broadcast = free_port(), free_port()
    (work / f"{name}-db").mkdir()
    args = broker_args(receive, broadcast, work / f"{name}-db", "ivo://example.test/comet-broker")
    proc = twistd(venv, work, name, args, raised=raised)
    wait_port(receive)
    wait_port(broadcast)
    return proc, receive, broadcast


def main() -> None:
    venv, work = Path(sys.argv[1]), Path(sys.argv[2])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    pool = list(
        AlertSimulator(
            SimulationConfig(seed=21, alerts_per_visit_mean=60, alerts_per_visit_sigma=0)
        )
        .visit(0)
        .alerts()
    )
    simulator = AlertSimulator(
        SimulationConfig(seed=22, alerts_per_visit_mean=40, alerts_per_visit_sigma=0)
    )
    two_visits = [a for v in (0, 1) for a in simulator.visit(v).alerts()]
    small = VoeventSerializer(mode="reference")  # cutouts by reference
    full = VoeventSerializer(mode="embed")  # cutouts embedded: ~250 KB
    # A stock Twisted peer drops frames of 100,000 bytes or more; even with cutouts by reference
    # a year of light curve often exceeds that, so the stock scenarios use alerts that fit.
    fits = [a for a in pool if len(small.dumps(a)) < 99_000]
    alerts = fits[:5] + [a for a in pool if a not in fits][:5]
    sizes = sorted(len(small.dumps(a)) for a in pool)
    out: dict = {
        "reference_mode_sizes": {
            "min": sizes[0],
            "median": sizes[len(sizes) // 2],
            "max": sizes[-1],
            "under_100k": sum(s < 100_000 for s in sizes),
            "of": len(sizes),
        }
    }
    procs = []
    try:
        # 1. their author -> our broker -> our subscriber
        with VtpBroker() as broker:
            ours = VtpTransport(broker.url)
            sub = ours.open_subscriber()
            broker.wait_for_subscribers(1)
            packet = small.dumps(alerts[0])
            path = work / "event-0.xml"
            path.write_bytes(packet)
            sent = subprocess.run(
                [
                    str(venv / "bin" / "comet-sendvo"),
                    "--host=127.0.0.1",
                    f"--port={broker.receive_port}",
                    "-f",
                    str(path),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            got = sub.poll(15)
            out["their_author_to_our_broker"] = {
                "sendvo_rc": sent.returncode,
                "sendvo_output": (sent.stdout + sent.stderr)[-400:],
                "received_same_bytes": got is not None and got.envelope.payload == packet,
                "broker_accepted": broker.accepted,
            }
            sub.close()

        # 2. our author -> their broker -> our subscriber (stock limits, reference packets)
        proc, receive, broadcast = comet_broker(venv, work, "comet-stock")
        procs.append(proc)
        theirs = VtpTransport(f"vtp://127.0.0.1:{broadcast}?receive={receive}")
        sub = theirs.open_subscriber()
        wait_for(lambda: sub._sock is not None)
        time.sleep(1.0)  # Comet registers the subscriber after the TCP handshake
        pub = theirs.open_publisher(timeout=10)
        packet = small.dumps(alerts[1])
        pub.publish(Envelope(payload=packet, content_type=VOEVENT_TYPE, alert_id=1))
        got = sub.poll(15)
        # the same bytes again
        pub.publish(Envelope(payload=packet, content_type=VOEVENT_TYPE, alert_id=1))
        big = full.dumps(alerts[6])
        try:
            pub.publish(Envelope(payload=big, content_type=VOEVENT_TYPE, alert_id=2))
            big_result = "answered"
        except TransportError as exc:
            big_result = f"no answer: {exc}"
        out["our_author_to_their_broker"] = {
            "acked": pub.acked,
            "naks": pub.naks,
            "our_subscriber_received_same_bytes": (
                got is not None and got.envelope.payload == packet
            ),
            "full_packet_bytes": len(big),
            "full_packet_to_stock_comet": big_result,
        }
        sub.close()

        # 2b. every alert of a two-visit simulation, compact, through a stock Comet
        proc, receive, broadcast = comet_broker(venv, work, "comet-stock-compact")
        procs.append(proc)
        theirs = VtpTransport(f"vtp://127.0.0.1:{broadcast}?receive={receive}")
        sub = theirs.open_subscriber()
        wait_for(lambda: sub._sock is not None)
        time.sleep(1.0)
        pub = theirs.open_publisher(timeout=10)
        compact = VoeventSerializer(mode="compact")
        packets = [compact.dumps(a) for a in two_visits]
        for i, packet in enumerate(packets):
            pub.publish(Envelope(payload=packet, content_type=VOEVENT_TYPE, alert_id=100 + i))
        received = []
        while len(received) < len(packets):
            got = sub.poll(15)
            if got is None:
                break
            received.append(got.envelope.payload)
        out["compact_through_stock_comet"] = {
            "sent": len(packets),
            "acked": len(pub.acked),
            "naks": pub.naks,
            "received": len(received),
            "received_same_bytes": sorted(received) == sorted(packets),
            "max_bytes": max(map(len, packets)),
            "visits": len({a["diaSource"]["visit"] for a in two_visits}),
        }
        sub.close()

        # 3. full packets to a Comet whose frame limit the fixture raised
        proc, receive, broadcast = comet_broker(venv, work, "comet-raised", raised=True)
        procs.append(proc)
        theirs = VtpTransport(f"vtp://127.0.0.1:{broadcast}?receive={receive}")
        sub = theirs.open_subscriber()
        wait_for(lambda: sub._sock is not None)
        time.sleep(1.0)
        pub = theirs.open_publisher(timeout=15)
        big = full.dumps(alerts[7])
        pub.publish(Envelope(payload=big, content_type=VOEVENT_TYPE, alert_id=3))
        got = sub.poll(20)
        out["full_packet_raised_limit"] = {
            "acked": pub.acked,
            "naks": pub.naks,
            "received_same_bytes": got is not None and got.envelope.payload == big,
            "bytes": len(big),
        }
        sub.close()

        # 4. their subscriber <- our broker
        with VtpBroker() as broker:
            saved = work / "comet-saved"
            saved.mkdir()
            (work / "comet-sub-db").mkdir()
            proc = twistd(
                venv,
                work,
                "comet-subscriber",
                [
                    "--local-ivo=ivo://example.test/comet-subscriber",
                    f"--remote=127.0.0.1:{broker.broadcast_port}",
                    "--save-event",
                    f"--save-event-directory={saved}",
                    f"--eventdb={work / 'comet-sub-db'}",
                ],
            )
            procs.append(proc)
            broker.wait_for_subscribers(1, timeout=30)
            pub = VtpTransport(broker.url).open_publisher()
            packet = small.dumps(alerts[4])
            pub.publish(Envelope(payload=packet, content_type=VOEVENT_TYPE, alert_id=4))
            wait_for(lambda: any(saved.iterdir()), timeout=20)
            files = list(saved.iterdir())
            wait_for(lambda: broker._sessions and broker._sessions[0].acks >= 1, timeout=10)
            sessions = list(broker._sessions)
            out["their_subscriber_from_our_broker"] = {
                "files_saved": len(files),
                "saved_same_bytes": bool(files) and files[0].read_bytes() == packet,
                "acks_from_comet": sessions[0].acks if sessions else 0,
            }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
