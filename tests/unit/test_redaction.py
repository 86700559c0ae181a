"""Passwords never appear in what a transport or the CLI says (issue 14, item 17): a mistake in
a URL that carries a password echoed the whole URL, password included."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alertbench.transports.base import get_transport

from alertbench.errors import ConfigError
from alertbench.redaction import redact_text, redact_url

PASSWORD = "hunter2-not-for-logs"


@pytest.mark.parametrize(
    "url",
    [
        f"kafka://127.0.0.1:9092/alerts?password={PASSWORD}&bogus=1",
        f"kafka://127.0.0.1:9092/alerts?user=u&password={PASSWORD}&compression=nope",
        f"kafka://127.0.0.1:9092?password={PASSWORD}",
        f"tcp://127.0.0.1:5000?max_frame=1&token={PASSWORD}",
        f"kafka://u:{PASSWORD}@127.0.0.1:9092/alerts?bogus=1",
    ],
    ids=["unknown-option", "bad-choice", "no-topic", "below-minimum", "userinfo"],
)
def test_a_transports_error_message_hides_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        get_transport(url)
    assert PASSWORD not in str(info.value)
    assert "***" in str(info.value) or "names no topic" in str(info.value)


def test_the_cli_error_line_hides_a_password() -> None:
    url = f"kafka://127.0.0.1:9/alerts?password={PASSWORD}&bogus=1"
    done = subprocess.run(
        [sys.executable, "-m", "alertbench.harness.cli", "run", "--transport", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert PASSWORD not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_redaction_keeps_what_is_not_secret() -> None:
    assert redact_url("kafka://127.0.0.1:9092/alerts?compression=lz4") == (
        "kafka://127.0.0.1:9092/alerts?compression=lz4"
    )
    assert redact_text(f"at kafka://a:{PASSWORD}@h:1/t now") == "at kafka://a:***@h:1/t now"
