from __future__ import annotations

import pytest
from alertbench.refimpl.alert.schema import (
    available_versions,
    latest_version,
    load_schema,
    schema_for_id,
)

from alertbench.errors import SchemaError


def test_latest_is_default_and_has_rubin_schema_id() -> None:
    schema = load_schema()
    assert schema.version == latest_version()
    assert schema.schema_id == schema.major * 100 + schema.minor
    assert schema.lsst.get_schema_id() == schema.schema_id  # lsst-alert-packet agrees


@pytest.mark.parametrize("version", available_versions())
def test_every_shipped_version_loads(version: str) -> None:
    schema = load_schema(version)
    assert schema.version == version
    assert schema_for_id(schema.schema_id) is schema  # parsed once, cached


def test_shipped_versions_include_current_rubin() -> None:
    assert {"7.0", "11.0", "11.1"} <= set(available_versions())


@pytest.mark.parametrize("bad", ["99.9", "eleven", "11"])
def test_unknown_version_is_a_schema_error(bad: str) -> None:
    with pytest.raises(SchemaError, match=r"11\.1|look like"):
        load_schema(bad)
