"""The mini-broker (Rubin's "simple filtering service"): user filters in, small streams out."""

from alertbench.refimpl.minibroker.service import MiniBroker, MiniBrokerStats
from alertbench.refimpl.minibroker.store import (
    AccessDenied,
    LimitExceeded,
    MiniBrokerStore,
    StoreError,
)

__all__ = [
    "AccessDenied",
    "LimitExceeded",
    "MiniBroker",
    "MiniBrokerStats",
    "MiniBrokerStore",
    "StoreError",
]
