"""alertbench: distributing astronomical alerts at Rubin/LSST scale, measured.

This ground-floor package holds what every layer shares (errors, lazy registries, package
resources, safe XML). The layers install beneath it from the repository's own folders:
``alertbench.refimpl`` (alert model, codecs, mini-broker core), ``alertbench.transports``
(one module per transport, their servers) and ``alertbench.harness`` (engine, reports, CLI).
Imports only ever point down that list; ``tests/unit/test_layers.py`` enforces it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("alertbench")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
