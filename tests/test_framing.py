"""The framing value objects (shared by both backends): validation, encode/decode, limits."""

from __future__ import annotations

import array
import pickle
import socket

import pytest

import fastsock
from fastsock import FrameTooLarge
from fastsock.framing import AsciiLength, Delimiter, FixedLength, FramingError, LengthPrefix, Netstring, Varint


def test_exported_by_both_backends(impl):
    for name in ("LengthPrefix", "Varint", "Delimiter", "FixedLength", "AsciiLength", "Netstring",
                 "Framing", "FramingError", "Stream", "connect"):
        assert name in impl.__all__
        assert hasattr(fastsock, name)
    assert impl.LengthPrefix is LengthPrefix


def test_value_objects():
    assert LengthPrefix() == LengthPrefix(4, "big")
    assert LengthPrefix() != LengthPrefix(4, "little")
    assert hash(Delimiter(b"\n")) == hash(Delimiter(b"\n"))
    assert repr(AsciiLength()) == "AsciiLength(width=5, max_size=99999)"
    for f in (LengthPrefix(2), Varint(10), Delimiter(b"ab", keep=True), FixedLength(3), AsciiLength(3), Netstring(9)):
        assert pickle.loads(pickle.dumps(f)) == f
        with pytest.raises(AttributeError):
            f.max_size = 1  # type: ignore[misc]


@pytest.mark.parametrize("call", [
    lambda: LengthPrefix(3), lambda: LengthPrefix(4, "middle"), lambda: LengthPrefix(1, max_size=256),
    lambda: LengthPrefix(max_size=-1), lambda: Delimiter(b""), lambda: FixedLength(0),
    lambda: AsciiLength(0), lambda: AsciiLength(21), lambda: AsciiLength(2, max_size=100),
    lambda: Varint(max_size=1 << 61),
])
def test_bad_parameters(call):
    with pytest.raises(ValueError):
        call()


def test_bad_types():
    with pytest.raises(TypeError):
        Delimiter("\n")
    with pytest.raises(TypeError):
        LengthPrefix("4")


@pytest.mark.parametrize("framing,payload,wire", [
    (LengthPrefix(), b"hi", b"\x00\x00\x00\x02hi"),
    (LengthPrefix(2, "little"), b"hi", b"\x02\x00hi"),
    (LengthPrefix(8), b"", b"\x00" * 8),
    (Varint(), b"x" * 300, b"\xac\x02" + b"x" * 300),
    (Delimiter(b"\r\n"), b"line", b"line\r\n"),
    (FixedLength(3), b"abc", b"abc"),
    (AsciiLength(), b"hello", b"00005hello"),
    (Netstring(), b"hello world!", b"12:hello world!,"),
])
def test_encode_decode(framing, payload, wire):
    assert framing.encode(payload) == wire
    assert framing.decode(wire + b"trailing") == (payload, len(wire))
    assert framing.decode(wire[:-1]) is None
    assert framing.encode(memoryview(payload)) == wire


def test_delimiter_keep_decodes_with_delimiter():
    assert Delimiter(b"\n", keep=True).decode(b"a\nb") == (b"a\n", 2)


def test_limits_and_malformed():
    with pytest.raises(FrameTooLarge):
        LengthPrefix(max_size=10).decode(b"\x00\x00\x00\x0b")
    with pytest.raises(FrameTooLarge):
        LengthPrefix(max_size=10).encode(b"x" * 11)
    with pytest.raises(FrameTooLarge):
        Varint(max_size=100).decode(b"\xff\x7f")
    with pytest.raises(FramingError):
        Varint().decode(b"\x80" * 9 + b"\x02")
    with pytest.raises(FrameTooLarge):
        Delimiter(max_size=3).decode(b"abcdef")
    with pytest.raises(FramingError):
        Delimiter(b"\n").encode(b"a\nb")
    with pytest.raises(FramingError):
        FixedLength(2).encode(b"abc")
    with pytest.raises(FramingError):
        AsciiLength().decode(b"12a45")
    with pytest.raises(FramingError):
        Netstring().decode(b"2:ab;")
    with pytest.raises(FramingError):
        Netstring().decode(b":")
    with pytest.raises(FrameTooLarge):
        Netstring(max_size=5).decode(b"123")
    assert isinstance(FramingError("x"), ValueError)


def test_netstring_leading_zeros_and_long_lengths_are_refused_at_once():
    # The spec forbids leading zeros; with them, b"000..." never exceeded max_size and
    # every read rescanned it all.
    assert Netstring().decode(b"0:,") == (b"", 3)
    assert Netstring().decode(b"0") is None
    for wire in (b"00", b"00:,", b"01:a,", b"0" * 100_000):
        with pytest.raises(FramingError):
            Netstring().decode(wire)
    with pytest.raises(FrameTooLarge) as info:
        Netstring(max_size=9999).decode(b"10000" + b"0" * 100_000)
    assert info.value.size == 10000


def test_ascii_length_malformed_before_too_large():
    # One rule for both backends: a header that is not all digits is a FramingError even
    # when its first digits already exceed max_size; an all-digit one is FrameTooLarge.
    with pytest.raises(FramingError):
        AsciiLength(2, max_size=5).decode(b"9x")
    with pytest.raises(FrameTooLarge) as info:
        AsciiLength(5, max_size=100).decode(b"99999")
    assert info.value.size == 99999
    with pytest.raises(FrameTooLarge) as info:
        AsciiLength(20, max_size=1 << 60).decode(b"9" * 20)
    assert info.value.size == (1 << 64) - 1  # saturated, as the C scanner reports it


MULTI_BYTE_FRAMINGS = [LengthPrefix(), LengthPrefix(2, "little"), Varint(), Delimiter(b"\n"),
                       FixedLength(8), AsciiLength(), Netstring()]


@pytest.mark.parametrize("framing", MULTI_BYTE_FRAMINGS, ids=repr)
def test_payload_size_is_in_bytes_not_items(framing):
    # array('I') has 4-byte items: its size is nbytes (8), not len() (2).
    payload = array.array("I", [1, 2])
    raw = payload.tobytes()
    assert len(raw) == 8
    assert framing.header(payload) == framing.header(raw)
    assert framing.encode(payload) == framing.encode(raw)
    assert framing.decode(framing.encode(payload)) == (raw, len(framing.encode(raw)))
    small = framing.__class__(**{**{f: getattr(framing, f) for f in framing._fields}, "max_size": 7}) \
        if not isinstance(framing, FixedLength) else FixedLength(2)
    with pytest.raises((FrameTooLarge, FramingError)):
        small.encode(payload)  # 8 bytes: over max_size 7 (FixedLength(2): not 2 bytes)


@pytest.mark.parametrize("framing", MULTI_BYTE_FRAMINGS, ids=repr)
def test_stream_writes_multi_byte_items_as_bytes(impl, framing):
    a, b = socket.socketpair()
    payload = array.array("I", [1, 2])
    with impl.Stream(a, framing=framing) as writer, impl.Stream(b, framing=framing) as reader:
        writer.write_frame(payload)
        big = payload if isinstance(framing, FixedLength) else array.array("I", [0x01020304] * 5000)  # > COPY_MAX
        writer.write_frames([payload, big])
        writer.write_frame(big)
        writer.flush()
        for expected in (payload, payload, big, big):
            assert reader.read_frame() == expected.tobytes()
