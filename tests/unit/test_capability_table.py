"""README.md's table of what each transport does with a slow or dead subscriber, and what it
guarantees, is the one generated from the Capabilities in code (issue 14)."""

from __future__ import annotations

from pathlib import Path

from alertbench.harness.report.capabilities import markdown_table, readme_table
from alertbench.transports.base import kinds

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_is_the_generated_one() -> None:
    found = readme_table(README.read_text())
    assert found is not None, "README.md lost the capability table's markers"
    assert found == markdown_table(), (
        "README.md's capability table is stale: replace it with `alertbench transports`"
    )


def test_every_registered_kind_has_a_row() -> None:
    table = markdown_table()
    for kind in kinds():
        assert f"| `{kind}` |" in table
