"""The reference implementation: the Rubin alert model, its codecs and the mini-broker's core.

``alert`` (the official schema, typed records, a simulator with realistic cutouts), ``codecs``
(the :class:`~alertbench.refimpl.codecs.Serializer` registry: Avro in the Confluent wire format,
Protobuf, VOEvent 2.0, the VOEvent 3 proposal; alert files, sizes, generated documents) and
``minibroker`` (filters, store and service, with the I/O it needs declared as ports). ``native``
is a Rust crate for the codec's hot path.

This floor imports only the ground package (``alertbench.errors``, ``registry``, ``resources``,
``xmlsafe``) and itself: never a transport (codecs and transports meet only at ``bytes``) and
never the harness. ``tests/unit/test_layers.py`` enforces it.
"""
