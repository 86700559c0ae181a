"""Reference alert implementation: the Rubin alert model, a realistic simulator and the codecs.

Nothing in this package imports a transport: codecs and transports meet only at ``bytes``.
"""
