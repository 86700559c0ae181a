"""Every registered transport kind held to the conformance suite (tests/conformance/suite.py).

The classes are generated from the registry: register a transport in ``TRANSPORTS`` and it is
collected here as ``Test_<kind>`` with no change to this file.
"""

from __future__ import annotations

from tests.conformance.suite import suite_classes

globals().update(suite_classes(__name__))
