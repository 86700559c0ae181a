"""Names that reach Kafka topics, ACLs and logs are checked as whole strings (issue 14, item 21:
`$` let a trailing newline through)."""

from __future__ import annotations

import pytest
from alertbench.refimpl.minibroker.store import MiniBrokerStore, StoreError


@pytest.fixture
def store(tmp_path):
    return MiniBrokerStore(tmp_path / "minibroker.sqlite")


@pytest.mark.parametrize("name", ["alice\n", "alice\nbob", "Alice", "", "1abc", "a" * 33])
def test_bad_user_names_are_refused(store, name) -> None:
    with pytest.raises(StoreError, match="user name"):
        store.add_user(name)


@pytest.mark.parametrize("name", ["bright\n", "bright\nx", "", ".hidden", "x" * 65])
def test_bad_filter_names_are_refused(store, name) -> None:
    token = store.add_user("alice")
    with pytest.raises(StoreError):
        store.add_filter(token, name, "diaSource.snr > 5")


def test_good_names_are_accepted(store) -> None:
    token = store.add_user("alice_1-b")
    assert store.add_filter(token, "bright.v2", "diaSource.snr > 5").name == "bright.v2"
