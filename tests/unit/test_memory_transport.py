"""The fast lane: the whole conformance suite on memory://, the reference transport, in seconds."""

from __future__ import annotations

from tests.conformance.suite import suite_class

Test_memory = suite_class("memory", __name__)
