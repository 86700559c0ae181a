"""Registers the throwaway transport and codec: one registry line each, nothing else."""

from alertbench.refimpl.codecs.base import SERIALIZERS
from alertbench.transports.base import TRANSPORTS

TRANSPORTS["throwaway"] = "throwaway_transport:ThrowawayTransport"
SERIALIZERS["throwaway"] = "throwaway_codec:ThrowawaySerializer"
