"""FrameEncoder on both backends: the buffers of encode/encode_many join to Framing.encode of
each payload; small frames are joined, payloads above COPY_MAX pass through uncopied;
validation as Stream.write_frame(s), all-or-nothing."""

from __future__ import annotations

import array

import pytest
from streamutil import ALL_FRAMINGS

from fastsock import FrameTooLarge, _streambase, resp
from fastsock.framing import FramingError

pytestmark = pytest.mark.timeout(30)

COPY_MAX = _streambase.COPY_MAX


@pytest.mark.parametrize("name,make", ALL_FRAMINGS, ids=[n for n, _ in ALL_FRAMINGS])
def test_encode_matches_framing_encode(impl, name, make):
    framing = make(impl)
    enc = impl.FrameEncoder(framing)
    assert enc.framing is framing
    top = 255 if name.startswith("LengthPrefix(1") else COPY_MAX + 5000
    payloads = [b"", b"a", b"payload", b"z" * 200, b"q" * min(top, COPY_MAX), b"L" * top, b"s"]
    for p in payloads:
        out = enc.encode(p)
        assert b"".join(out) == framing.encode(p)
        assert len(out) == (1 if len(p) <= COPY_MAX else len(out))
    out = enc.encode_many(payloads)
    assert b"".join(out) == b"".join(framing.encode(p) for p in payloads)
    assert enc.encode_many([]) == []
    assert b"".join(enc.encode_many(iter(payloads[:3]))) == b"".join(framing.encode(p) for p in payloads[:3])


def test_small_frames_are_joined_large_pass_through(impl):
    enc = impl.FrameEncoder(impl.LengthPrefix())
    big = b"B" * (COPY_MAX + 1)
    out = enc.encode(big)
    assert len(out) == 2 and out[1] is big  # header, then the payload itself
    assert enc.encode(b"x" * COPY_MAX) == [impl.LengthPrefix().encode(b"x" * COPY_MAX)]
    other = bytearray(b"C" * (COPY_MAX + 1))
    out = enc.encode_many([b"a", b"b", big, b"c", other, b"d", b"e"])
    assert len(out) == 5
    assert out[0] == b"\x00\x00\x00\x01a\x00\x00\x00\x01b" + len(big).to_bytes(4, "big")
    assert out[1] is big
    assert isinstance(out[3], memoryview) and out[3].obj is other  # no copy
    assert out[4] == b"\x00\x00\x00\x01d\x00\x00\x00\x01e"
    other[0] = ord("!")
    assert out[3][0] == ord("!")


def test_trailer_after_a_large_payload(impl):
    enc = impl.FrameEncoder(impl.Netstring())
    big = b"N" * (COPY_MAX + 1)
    out = enc.encode_many([big, b"x"])
    assert out[1] is big and out[0] == b"%d:" % len(big) and out[2] == b",1:x,"
    assert enc.encode(big) == [b"%d:" % len(big), big, b","]


def test_non_bytes_payloads(impl):
    enc = impl.FrameEncoder(impl.LengthPrefix())
    arr = array.array("I", [1, 2])
    assert b"".join(enc.encode(arr)) == b"\x00\x00\x00\x08" + arr.tobytes()
    assert b"".join(enc.encode(memoryview(b"abc")[1:])) == b"\x00\x00\x00\x02bc"
    assert b"".join(enc.encode_many([bytearray(b"q"), arr])) == (
        b"\x00\x00\x00\x01q\x00\x00\x00\x08" + arr.tobytes())


def test_errors(impl):
    enc = impl.FrameEncoder(impl.LengthPrefix(max_size=10))
    with pytest.raises(FrameTooLarge) as info:
        enc.encode(b"x" * 11)
    assert info.value.size == 11 and info.value.limit == 10
    with pytest.raises(FrameTooLarge):
        enc.encode_many([b"ok", b"x" * 11])
    for bad in ("text", 5, None):
        with pytest.raises(TypeError):
            enc.encode(bad)
    for bad in (b"single", bytearray(b"x"), "text", 5, [b"ok", "text"], [1]):
        with pytest.raises(TypeError):
            enc.encode_many(bad)
    with pytest.raises(FramingError):
        impl.FrameEncoder(impl.Delimiter(b"\n")).encode(b"a\nb")
    with pytest.raises(FramingError):
        impl.FrameEncoder(impl.FixedLength(3)).encode_many([b"abc", b"ab"])
    for bad in (None, "LengthPrefix", impl.LengthPrefix):
        with pytest.raises(TypeError):
            impl.FrameEncoder(bad)
    with pytest.raises(AttributeError):
        enc.framing = impl.Varint()


def test_resp_values(impl):
    enc = impl.FrameEncoder(impl.RESP())
    values = [b"bulk", "OK", 42, [b"a", None], resp.NULL, resp.Error("ERR x")]
    for v in values:
        assert enc.encode(v) == [resp.encode(v)]
    assert b"".join(enc.encode_many(values)) == b"".join(resp.encode(v) for v in values)
    big = b"R" * (COPY_MAX + 10)
    out = enc.encode_many([b"a", big, b"b"])
    assert out == [resp.encode(b"a"), resp.encode(big), resp.encode(b"b")]
    with pytest.raises(TypeError):
        enc.encode_many([b"ok", object()])
    with pytest.raises(FrameTooLarge):
        impl.FrameEncoder(impl.RESP(max_size=4)).encode_many([b"ok", b"toolong"])
