"""Per-message zstd VOEvent XML: exact round trip, its own content type, hostile frames refused."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import zstandard
from alertbench.refimpl.codecs import get_serializer
from alertbench.refimpl.codecs.voevent import (
    XML_MEDIA_TYPE,
    ZSTD_MEDIA_TYPE,
    VoeventSerializer,
)
from alertbench.transports.vtp import VtpTransport

from alertbench.errors import ConfigError, DecodeError, UnknownSerializerError


@pytest.fixture(scope="module")
def zstd_xml() -> VoeventSerializer:
    return get_serializer("voevent", compression="zstd")


@pytest.mark.parametrize("mode", ["embed", "reference", "compact"])
def test_round_trip_is_exact_and_the_frame_holds_the_plain_xml(alerts, mode) -> None:
    plain = get_serializer("voevent", mode=mode)
    packed = get_serializer("voevent", mode=mode, compression="zstd", compression_level=9)
    for alert in alerts[:3]:
        xml, frame = plain.dumps(alert), packed.dumps(alert)
        assert frame.startswith(b"\x28\xb5\x2f\xfd") and len(frame) < len(xml)
        assert zstandard.ZstdDecompressor().decompress(frame) == xml
        assert packed.loads(frame) == plain.loads(xml)


def test_the_content_type_says_zstd_and_picks_the_reader(zstd_xml, alerts) -> None:
    assert zstd_xml.content_type == zstd_xml.media_type == ZSTD_MEDIA_TYPE
    assert get_serializer("voevent").content_type == XML_MEDIA_TYPE
    frame = zstd_xml.dumps(alerts[0])
    reader = VoeventSerializer.for_content_type(ZSTD_MEDIA_TYPE, mode="embed")
    assert reader.loads(frame) == zstd_xml.loads(frame)
    assert VoeventSerializer.for_content_type(XML_MEDIA_TYPE).compression == "none"
    with pytest.raises(UnknownSerializerError):
        VoeventSerializer.for_content_type("application/vnd.rubin.alert+avro")


def test_a_transport_that_carries_only_xml_refuses_zstd_packets() -> None:
    assert VtpTransport.capabilities.carries(XML_MEDIA_TYPE)
    assert not VtpTransport.capabilities.carries(ZSTD_MEDIA_TYPE)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"compression": "gzip"}, "compression"),
        ({"compression": "zstd", "compression_level": 0}, "level"),
        ({"compression": "zstd", "compression_level": 22}, "level"),
        ({"compression": "zstd", "compression_level": "fast"}, "level"),
    ],
)
def test_bad_compression_options_are_config_errors(options, message) -> None:
    with pytest.raises(ConfigError, match=message):
        get_serializer("voevent", **options)


def test_a_command_line_level_is_text(alerts) -> None:
    codec = get_serializer("voevent", compression="zstd", compression_level="1")
    assert codec.loads(codec.dumps(alerts[0]))["diaSourceId"] == alerts[0]["diaSourceId"]


def _cases(frame: bytes, xml: bytes) -> dict[str, bytes]:
    second = zstandard.ZstdCompressor().compress(b"<x/>")
    return {
        "garbage": b"\x00\xffnot zstd at all" * 8,
        "empty": b"",
        "plain XML": xml,
        "magic only": frame[:4],
        "header only": frame[:8],
        "truncated by one byte": frame[:-1],
        "truncated by half": frame[: len(frame) // 2],
        "trailing bytes": frame + b"\x00",
        "two frames": frame + second,
        "zstd of garbage": zstandard.ZstdCompressor().compress(b"\x00\x01 not xml"),
        "a skippable frame": b"\x50\x2a\x4d\x18\x04\x00\x00\x00abcd",
    }


@pytest.mark.parametrize(
    "case",
    [
        "garbage",
        "empty",
        "plain XML",
        "magic only",
        "header only",
        "truncated by one byte",
        "truncated by half",
        "trailing bytes",
        "two frames",
        "zstd of garbage",
        "a skippable frame",
    ],
)
def test_damaged_frames_are_decode_errors(zstd_xml, alerts, case) -> None:
    xml = get_serializer("voevent").dumps(alerts[0])
    frame = zstd_xml.dumps(alerts[0])
    with pytest.raises(DecodeError):
        zstd_xml.loads(_cases(frame, xml)[case])


def test_a_zstd_frame_sent_as_plain_xml_is_a_decode_error(zstd_xml, alerts) -> None:
    with pytest.raises(DecodeError):
        get_serializer("voevent").loads(zstd_xml.dumps(alerts[0]))


def test_a_frame_over_max_bytes_is_refused_even_if_it_is_valid(alerts) -> None:
    small = get_serializer("voevent", compression="zstd", mode="compact", max_bytes=4096)
    frame = get_serializer("voevent", compression="zstd", mode="compact").dumps(alerts[0])
    with pytest.raises(DecodeError, match="over the limit"):
        small.loads(frame)


BOMB_CHECK = textwrap.dedent(
    """
    import resource, sys, zstandard
    from alertbench.errors import DecodeError
    from alertbench.harness.pool import alert_pool
    from alertbench.refimpl.codecs import get_serializer

    GiB, MiB = 1 << 30, 1 << 20
    def bomb(declared):
        out, chunk = [], bytes(MiB)
        cobj = zstandard.ZstdCompressor(level=1).compressobj(size=GiB if declared else -1)
        for _ in range(GiB // MiB):
            out.append(cobj.compress(chunk))
        out.append(cobj.flush())
        return b"".join(out)

    def address_space():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

    codec = get_serializer("voevent", compression="zstd")
    codec.loads(codec.dumps(alert_pool(1, 1)[0]))  # everything lazy is loaded before the limit
    bombs = {"declared": bomb(True), "undeclared": bomb(False)}
    # From here on this process cannot map 256 MiB more, let alone the gigabyte a bomb holds.
    resource.setrlimit(resource.RLIMIT_AS, (address_space() + 256 * MiB, resource.RLIM_INFINITY))
    for name, frame in bombs.items():
        try:
            codec.loads(frame)
        except DecodeError as exc:
            print(name, len(frame), exc)
        else:
            sys.exit("a 1 GiB zstd bomb was decoded")
    try:  # the control: a decoder that trusts the header does hit the limit
        zstandard.ZstdDecompressor().decompress(bombs["declared"])
    except (MemoryError, zstandard.ZstdError) as exc:
        print("control", len(bombs["declared"]), type(exc).__name__)
    else:
        sys.exit("the address-space limit did not stop an unbounded decode")
    """
)


def test_a_zstd_bomb_is_refused_in_bounded_memory() -> None:
    """1 GiB of zeros in ~32 KB of zstd, with and without its size in the frame header: a
    DecodeError, in a fresh process that cannot map 256 MiB more than it has (so a decoder
    that allocated what the frame holds would fail with MemoryError instead), while a plain
    zstd decode of the same frame under that limit does fail (the limit is real)."""
    done = subprocess.run(
        [sys.executable, "-c", BOMB_CHECK], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr + done.stdout
    declared, undeclared, control = done.stdout.splitlines()
    for line in (declared, undeclared):
        size = int(line.split(" ", 2)[1])
        assert size < 1 << 20, line  # a bomb: over 1,000x smaller than what it holds
    assert "declares 1,073,741,824 bytes" in declared  # refused from the header alone
    assert "past the limit" in undeclared
    assert control.startswith("control ")
