"""VTP interop against a real third-party implementation: Comet, installed from PyPI.

Comet runs in its own virtual environment (made here, once, in .cache/), and, because it binds
every interface, only inside a network namespace that holds nothing but loopback (``unshare -n``):
see tests/support/vtp_interop.py for the scenarios.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from alertbench.transports.servers import comet as harness_comet

from alertbench.errors import AlertbenchError
from tests.support.servers import unavailable as _unavailable


@pytest.fixture(scope="module")
def comet_venv() -> Path:
    try:
        return harness_comet.comet_venv()
    except AlertbenchError as exc:
        _unavailable(str(exc))
        raise


@pytest.fixture(scope="module")
def interop(comet_venv, tmp_path_factory) -> dict:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        _unavailable("VTP interop needs 'unshare' and 'ip' (util-linux, iproute2)")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        _unavailable(f"cannot create a network namespace: {probe.stderr.strip()}")
    work = tmp_path_factory.mktemp("vtp-interop")
    script = Path(__file__).parent.parent / "support" / "vtp_interop.py"
    result = subprocess.run(
        ["unshare", "-n", sys.executable, str(script), str(comet_venv), str(work)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"interop script failed:\n{result.stderr[-4000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print("\nVTP interop:", json.dumps(report, indent=1))
    return report


def test_their_author_publishes_to_our_broker(interop) -> None:
    seen = interop["their_author_to_our_broker"]
    assert seen["sendvo_rc"] == 0 and "Event was sent successfully" in seen["sendvo_output"]
    assert seen["broker_accepted"] == 1
    assert seen["received_same_bytes"]  # and our subscriber got exactly what Comet sent


def test_our_author_publishes_to_their_broker_and_our_subscriber_receives(interop) -> None:
    seen = interop["our_author_to_their_broker"]
    assert seen["acked"] == [1]
    assert seen["our_subscriber_received_same_bytes"]
    # Comet de-duplicates by content too: the same bytes again are refused, permanently.
    assert seen["naks"] == [[1, "Event rejected: Previously seen by this broker"]]


def test_their_subscriber_receives_from_our_broker(interop) -> None:
    seen = interop["their_subscriber_from_our_broker"]
    assert seen["files_saved"] == 1 and seen["saved_same_bytes"]
    assert seen["acks_from_comet"] == 1


def test_a_stock_comet_relays_every_compact_alert_of_two_visits(interop) -> None:
    seen = interop["compact_through_stock_comet"]
    assert seen["visits"] == 2 and seen["sent"] == 80
    assert seen["max_bytes"] < 100_000 and seen["naks"] == []
    assert seen["acked"] == seen["received"] == seen["sent"] and seen["received_same_bytes"]


def test_full_packets_need_a_raised_frame_limit(interop) -> None:
    stock = interop["our_author_to_their_broker"]
    assert stock["full_packet_bytes"] > 100_000
    assert stock["full_packet_to_stock_comet"].startswith("no answer")  # dropped silently
    raised = interop["full_packet_raised_limit"]
    assert raised["bytes"] > 100_000 and raised["acked"] == [3] and raised["received_same_bytes"]
