"""One message as one zstd frame, and back, with the output bounded before it is produced.

Per-message compression sits inside the payload (unlike Kafka's ``compression.type``, which
compresses whole batches in the client), so a consumer decompresses bytes anyone who can write
to the stream chose: a few kilobytes of zstd can claim, and produce, gigabytes. The decoder here
therefore refuses, before decompressing anything, a frame whose header declares more than the
limit or a window larger than :data:`MAX_WINDOW_BYTES`; a frame that does not declare its size
gets an output buffer of exactly the limit, and overflowing it is an error, not a bigger buffer.
Exactly one complete frame is accepted: truncated frames, trailing bytes and a second frame are
refused too, so what was checked is all that was sent.
"""

from __future__ import annotations

import threading

import zstandard

from alertbench.errors import ConfigError

MAGIC = b"\x28\xb5\x2f\xfd"
"""The first four bytes of every zstd frame (RFC 8878, little-endian 0xFD2FB528)."""
DEFAULT_LEVEL = 3
"""zstd's own default: most of level 9's ratio at a fraction of its CPU, for XML alerts too."""
LEVELS = range(1, 20)
"""The levels a message may be compressed with (20-22, "ultra", need windows we refuse)."""
MAX_WINDOW_BYTES = 1 << 23
"""8 MiB: the largest back-reference window a decoder allocates (levels 1-19 on a message of a
few MiB never need more; zstd's own decoder accepts 128 MiB)."""


class ZstdFrameError(ValueError):
    """Bytes that are not one complete, bounded zstd frame (the codec wraps it in DecodeError)."""


def check_level(level: int | str) -> int:
    """A compression level from code or a command line (``voevent.compression_level=9``)."""
    try:
        value = int(level)
    except (TypeError, ValueError):
        raise ConfigError(f"zstd level must be a whole number, got {level!r}") from None
    if value not in LEVELS:
        raise ConfigError(f"zstd level must be {LEVELS.start}-{LEVELS.stop - 1}, got {value}")
    return value


class ZstdFrames:
    """Compress and decompress single-frame messages; one context per thread (zstd contexts
    are reused for speed but must not be shared by two threads at once)."""

    def __init__(self, level: int | str = DEFAULT_LEVEL, max_output: int = 4 * 1024 * 1024):
        self.level = check_level(level)
        self.max_output = max_output
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            # write_content_size: the decoder can refuse an oversized frame from its header.
            cctx = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
            self._local.cctx = cctx
        return cctx

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_BYTES)
            self._local.dctx = dctx
        return dctx

    def compress(self, data: bytes) -> bytes:
        return self._compressor().compress(data)

    def decompress(self, data: bytes) -> bytes:
        """The one frame's content; ZstdFrameError for anything else, nothing over the limit
        ever allocated."""
        if data[:4] != MAGIC:
            raise ZstdFrameError(f"not a zstd frame (starts {bytes(data[:4])!r})")
        if len(data) > self.max_output:  # zstd never expands: no honest frame is this big
            raise ZstdFrameError(f"zstd frame of {len(data):,} bytes, over {self.max_output:,}")
        try:
            header = zstandard.get_frame_parameters(data)
        except zstandard.ZstdError as exc:
            raise ZstdFrameError(f"unreadable zstd frame header: {exc}") from None
        declared = header.content_size
        if declared != zstandard.CONTENTSIZE_UNKNOWN and declared > self.max_output:
            raise ZstdFrameError(
                f"zstd frame declares {declared:,} bytes, over the limit of {self.max_output:,}"
            )
        if header.window_size > MAX_WINDOW_BYTES:
            raise ZstdFrameError(
                f"zstd frame wants a {header.window_size:,}-byte window, over {MAX_WINDOW_BYTES:,}"
            )
        try:
            # A declared size (checked above) is the buffer; an undeclared one gets the limit.
            out = self._decompressor().decompress(
                data, max_output_size=self.max_output, allow_extra_data=False
            )
        except zstandard.ZstdError as exc:
            bound = (
                f" (or it decompresses past the limit of {self.max_output:,} bytes)"
                if declared == zstandard.CONTENTSIZE_UNKNOWN
                else ""
            )
            raise ZstdFrameError(f"not one complete zstd frame{bound}: {exc}") from None
        if len(out) > self.max_output:  # unreachable by the buffers above; cheap to be sure
            raise ZstdFrameError(f"zstd frame decompresses past {self.max_output:,} bytes")
        return out
