"""A store serves one alert schema, and a filter that no longer compiles never stops the service
(issue 14, item 6: a filter registered with --schema-version 9.0 made a running `serve` die at
its next reload, and it could not start again until an operator deleted the row)."""

from __future__ import annotations

import pytest
from alertbench.refimpl.alert.schema import available_versions, load_schema
from alertbench.refimpl.minibroker.filters import FieldCatalog
from alertbench.refimpl.minibroker.service import MiniBroker
from alertbench.refimpl.minibroker.store import MiniBrokerStore

from alertbench.errors import StoreError


def test_a_store_refuses_filters_checked_against_another_schema(tmp_path) -> None:
    path = tmp_path / "minibroker.sqlite"
    MiniBrokerStore(path).close()  # created for the default (latest) schema
    older = next(v for v in available_versions() if v != load_schema().version)
    with pytest.raises(StoreError, match=f"serves alert schema {load_schema().version}"):
        MiniBrokerStore(path, FieldCatalog(load_schema(older)))
    MiniBrokerStore(path).close()  # the right schema still opens it


def test_a_filter_that_no_longer_compiles_is_disabled_not_fatal(tmp_path) -> None:
    store = MiniBrokerStore(tmp_path / "minibroker.sqlite")
    alice = store.add_user("alice")
    bob = store.add_user("bob")
    store.add_filter(alice, "bright", "diaSource.snr > 50")
    store.add_filter(bob, "faint", "diaSource.snr < 10")
    # As an older release (or another schema) could have left it: a field this schema lacks.
    store._write(
        "INSERT INTO filters (user, name, expression, created) VALUES (?, ?, ?, ?)",
        ("bob", "old", "diaSource.noSuchField > 1", 0.0),
    )
    broker = MiniBroker(store, outputs=[])
    users = {u.user.name: [name for name, _ in u.filters] for u in broker.reload()}
    assert users == {"alice": ["bright"], "bob": ["faint"]}  # everyone else goes on
    assert list(broker.stats.disabled_filters) == ["bob/old"]
    assert "noSuchField" in broker.stats.disabled_filters["bob/old"]
    assert broker.stats.as_dict()["disabled_filters"] == broker.stats.disabled_filters
