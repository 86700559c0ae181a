"""Codecs: a Rubin alert (a dict valid against the official schema) to bytes and back.

One interface (:class:`Serializer`), one registry (:data:`SERIALIZERS`), chosen by name.
"""

from alertbench.refimpl.codecs.base import (
    SERIALIZERS,
    Alert,
    Serializer,
    get_serializer,
    serializer_name_for,
)

__all__ = ["SERIALIZERS", "Alert", "Serializer", "get_serializer", "serializer_name_for"]
