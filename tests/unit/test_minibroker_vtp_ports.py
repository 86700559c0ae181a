"""Users' own VTP ports in the store: allow-list parsing, one port per user, old stores migrate,
and the ``user vtp-port`` command (a bad CIDR is one line and exit status 2)."""

from __future__ import annotations

import ipaddress
import sqlite3

import pytest
from alertbench.harness.cli import main
from alertbench.refimpl.minibroker.store import (
    MiniBrokerStore,
    allows,
    parse_allow_list,
)

from alertbench.errors import StoreError


def test_allow_lists_parse_ipv4_ipv6_and_single_hosts() -> None:
    nets = parse_allow_list(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32", "10.0.0.0/8"])
    assert [str(n) for n in nets] == ["127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32"]
    assert allows(nets, ipaddress.ip_address("10.2.3.4"))
    assert allows(nets, ipaddress.ip_address("2001:db8::7"))
    assert allows(nets, ipaddress.ip_address("::ffff:127.0.0.1"))  # IPv4 on an IPv6 socket
    assert not allows(nets, ipaddress.ip_address("127.0.0.2"))
    assert not allows(nets, ipaddress.ip_address("::1"))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("10.0.0.1/8", "host bits set"),
        ("300.1.1.1", "not an IP address"),
        ("127.0.0.1/33", "not an IP address"),
        ("localhost", "not an IP address"),
        ("", "not an IP address"),
    ],
)
def test_bad_allow_entries_are_refused_in_one_line(text: str, why: str) -> None:
    with pytest.raises(StoreError, match=why) as caught:
        parse_allow_list([text])
    assert "\n" not in str(caught.value)


def test_an_empty_allow_list_is_refused() -> None:
    with pytest.raises(StoreError, match="at least one"):
        parse_allow_list([])


def test_a_user_port_is_one_users_and_follows_them(tmp_path) -> None:
    store = MiniBrokerStore(tmp_path / "mb.sqlite")
    store.add_user("alice")
    store.add_user("bob")
    store.set_vtp_port("alice", 9101, ["127.0.0.1/32"])
    with pytest.raises(StoreError, match="already taken by user 'alice'"):
        store.set_vtp_port("bob", 9101, ["127.0.0.1/32"])
    store.set_vtp_port("bob", 0, ["::1"])  # port 0 (the service picks) may repeat
    store.set_vtp_port("alice", 0, ["127.0.0.2"])
    store.set_vtp_port("bob", 9101, ["127.0.0.1/32"])  # alice let go of it
    with pytest.raises(StoreError, match="no user 'carol'"):
        store.set_vtp_port("carol", 0, ["127.0.0.1/32"])
    with pytest.raises(StoreError, match="between 0 and 65535"):
        store.set_vtp_port("alice", 70000, ["127.0.0.1/32"])
    before = store.revision()
    store.set_vtp_port("alice", 0, ["127.0.0.3"])
    assert store.revision() > before  # a running service sees the change
    got = {p.user: (p.port, [str(n) for n in p.allow]) for p in store.vtp_ports()}
    assert got == {"alice": (0, ["127.0.0.3/32"]), "bob": (9101, ["127.0.0.1/32"])}
    store.remove_vtp_port("alice")
    with pytest.raises(StoreError, match="no VTP port"):
        store.remove_vtp_port("alice")
    assert [p.user for p in store.vtp_ports()] == ["bob"]
    store.close()


def test_a_store_made_before_vtp_ports_opens_and_gains_them(tmp_path) -> None:
    path = tmp_path / "old.sqlite"
    MiniBrokerStore(path).close()
    with sqlite3.connect(path) as db:  # as an earlier release left it
        db.execute("DROP INDEX vtp_ports_port")
        db.execute("DROP TABLE vtp_ports")
    store = MiniBrokerStore(path)
    token = store.add_user("old")
    store.set_vtp_port("old", 0, ["127.0.0.1"])
    assert [p.user for p in store.vtp_ports()] == ["old"]
    assert store.authenticate(token).name == "old"
    store.close()


def test_the_vtp_port_command(tmp_path, capsys) -> None:
    db = str(tmp_path / "mb.sqlite")
    assert main(["minibroker", "user", "add", "alice", "--db", db]) == 0
    args = ["minibroker", "user", "vtp-port", "alice", "--db", db]
    assert main([*args, "--port", "0", "--allow", "127.0.0.1/32", "--allow", "::1"]) == 0
    assert "from 127.0.0.1/32, ::1/128" in capsys.readouterr().out
    assert main(["minibroker", "user", "vtp-ports", "--db", db]) == 0
    assert capsys.readouterr().out == "alice\t0\t127.0.0.1/32,::1/128\n"
    assert main([*args, "--port", "9200", "--allow", "10.0.0.1/8"]) == 2
    err = capsys.readouterr().err
    assert "host bits set" in err and err.count("\n") == 1
    assert main([*args, "--port", "70000", "--allow", "127.0.0.1"]) == 2
    assert main([*args, "--port", "9200"]) == 2  # no allow-list: refused
    assert main([*args, "--remove"]) == 0
    assert main(["minibroker", "user", "vtp-ports", "--db", db]) == 0
    assert capsys.readouterr().out.endswith("removed\n")
