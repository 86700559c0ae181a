"""A stock Comet 3.1.0 subscriber receives a mini-broker user's stream (issue: Comet subscribers).

Comet answers VTP ``authenticate`` only with its XPath filters, so it cannot present the token
the mini-broker's token port asks for. The mini-broker therefore serves, next to the token port,
a port per user with an IP allow-list (Comet's own model; ``alertbench minibroker user vtp-port``):
the subscriber's address is its credential there. The Comet scenarios run in a loopback-only
network namespace (tests/support/comet_subscriber.py); the rest of this file checks the ports
following the store, with our own subscriber.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alertbench.harness.minibroker_io import VtpUserStreams
from alertbench.refimpl.minibroker import MiniBrokerStore
from alertbench.transports.servers import comet as harness_comet
from alertbench.transports.vtp import VtpTransport

from alertbench.errors import AlertbenchError
from tests.support.servers import unavailable


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def comet(tmp_path_factory) -> dict:
    try:
        venv = harness_comet.comet_venv()
    except AlertbenchError as exc:
        unavailable(str(exc))
        raise
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        unavailable("the Comet scenarios need 'unshare' and 'ip' (util-linux, iproute2)")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        unavailable(f"cannot create a network namespace: {probe.stderr.strip()}")
    work = tmp_path_factory.mktemp("comet-subscriber")
    script = Path(__file__).parent.parent / "support" / "comet_subscriber.py"
    result = subprocess.run(
        ["unshare", "-n", sys.executable, str(script), str(venv), str(work)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"Comet scenario failed:\n{result.stderr[-4000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print("\nComet subscribers:", json.dumps(report, indent=1))
    return report


def test_a_comet_subscriber_receives_exactly_its_users_stream(comet) -> None:
    assert comet["port_errors"] == {} and comet["comet_alice_connected"]
    alice = comet["alice"]
    assert alice["expected"], "the visit must have alerts alice's filter selects"
    assert alice["saved"] == alice["expected"]  # all of hers, each once, none of bob's
    assert alice["all_xsd_valid"] and alice["same_bytes_as_the_broker_sent"]
    assert alice["sessions_acks"] == [len(alice["expected"])]  # Comet acknowledged each one
    # The token port works as before, beside it: bob gets his (disjoint) selection.
    assert comet["bob"]["received"] == comet["bob"]["expected"]
    assert not set(comet["bob"]["received"]) & set(alice["saved"])


def test_a_subscriber_from_an_address_not_allowed_gets_nothing_and_is_closed(comet) -> None:
    raw = comet["carol_raw_from_127_0_0_1"]
    assert raw["first"]["role"] == "nak" and "may not subscribe" in raw["first"]["result"]
    assert raw["closed"]
    assert comet["carol_raw_from_127_0_0_2_admitted"]  # the allowed address is let in
    assert comet["comet_carol_refused"]  # the stock Comet from 127.0.0.1 is turned away
    carol = comet["carol"]
    assert carol["matched"] > 0 and carol["saved"] == 0 and carol["delivered"] == 0
    assert carol["no_subscriber"] == carol["matched"]
    assert comet["counters"]["subscribers_refused_address"] >= 2


# -- the ports follow the store (our own subscriber; no Comet needed) ---------------------------


@pytest.fixture
def store(tmp_path) -> MiniBrokerStore:
    with MiniBrokerStore(tmp_path / "mb.sqlite") as opened:
        yield opened


def test_allow_list_changes_and_removal_reach_a_running_service(store) -> None:
    store.add_user("dave")
    store.set_vtp_port("dave", 0, ["127.0.0.1"])
    vtp = VtpUserStreams(
        store.authenticate, user_ports=store.vtp_ports, revision=store.revision,
        reload_interval=0.1,
    )  # fmt: skip
    try:
        port = vtp.user_ports()["dave"]
        assert port not in (0, vtp.broker.broadcast_port)
        sub = VtpTransport(f"vtp://127.0.0.1:{port}").open_subscriber(reconnect=False)
        assert _wait(lambda: vtp.broker.subscribers_of("dave") == 1)
        vtp.broker.deliver(b"<not-even-xml/>", "dave")
        assert _wait(lambda: bool(sub.errors))  # it reached the subscriber (which naks it)
        # The allow-list changes while the service runs: the subscriber is dropped.
        store.set_vtp_port("dave", 0, ["127.0.0.2/32", "::1"])
        assert _wait(lambda: vtp.broker.subscribers_of("dave") == 0)
        assert vtp.user_ports()["dave"] == port  # same grant, same port
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.settimeout(5)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        assert b"nak" in data and b"may not subscribe" in data  # refused, then closed
        sub.close()
        # Removed: the port closes.
        store.remove_vtp_port("dave")
        assert _wait(lambda: "dave" not in vtp.user_ports())
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        vtp.close()


def test_a_port_that_cannot_be_opened_is_reported_and_the_others_served(store) -> None:
    store.add_user("erin")
    store.add_user("fred")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        store.set_vtp_port("erin", busy, ["127.0.0.1/32"])
        store.set_vtp_port("fred", 0, ["127.0.0.1/32"])
        vtp = VtpUserStreams(store.authenticate, user_ports=store.vtp_ports)
        try:
            assert "cannot open port" in vtp.port_errors["erin"]
            assert list(vtp.user_ports()) == ["fred"]
        finally:
            vtp.close()
    # A user's port may not be the token port.
    token_port = socket.create_server(("127.0.0.1", 0))
    port = token_port.getsockname()[1]
    token_port.close()
    store.set_vtp_port("erin", port, ["127.0.0.1/32"])
    vtp = VtpUserStreams(store.authenticate, port=port, user_ports=store.vtp_ports)
    try:
        assert vtp.port_errors == {"erin": f"port {port} is the token port"}
    finally:
        vtp.close()
