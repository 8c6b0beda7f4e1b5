"""Regression tests for what fuzzing found (tests/fuzz/, issue 13), on both backends. Each
finding's input also stays in its target's corpus (tests/fuzz/corpus/<target>/regress-*),
which tests/test_fuzz_corpus.py replays at the C level."""

from __future__ import annotations

import itertools

import pytest
from sockutil import make_pair

from fastsock.framing import FramingError

pytestmark = pytest.mark.timeout(30)

# (delimiter, payload): the payload holds no whole delimiter, but its end and the delimiter
# written after it hold one that starts inside the payload, so the frame would be read back
# shorter than written (fuzz_frame_delimiter: b"ab" + b"aba" reads as b"" then b"ba").
OVERLAPS = [(b"aba", b"ab"), (b"aba", b"xab"), (b"aa", b"a"), (b"\r\n\r\n", b"x\r\n"), (b"abab", b"ab")]


@pytest.mark.parametrize(("delim", "payload"), OVERLAPS)
def test_delimiter_refuses_a_payload_whose_end_the_delimiter_completes(impl, delim, payload):
    framing = impl.Delimiter(delim)
    with pytest.raises(FramingError):
        framing.encode(payload)
    with pytest.raises(FramingError):
        impl.FrameEncoder(framing).encode(payload)
    with pytest.raises(FramingError):
        impl.FrameEncoder(framing).encode_many([b"fine", payload])
    a, b = make_pair(impl, "unix")
    with impl.Stream(a, framing=framing) as writer, b:
        with pytest.raises(FramingError):
            writer.write_frame(payload)
        with pytest.raises(FramingError):
            writer.write_frames([b"fine", payload])
        writer.write_frame(b"after")  # nothing of the refused frames was written
        writer.shutdown_write()
        with impl.Stream(b, framing=framing) as reader:
            assert reader.read_frame() == b"after"


@pytest.mark.parametrize("delim", [b"aba", b"aa", b"abab", b"aab", b"\n"])
def test_every_delimiter_payload_written_reads_back(impl, delim):
    """Every payload over the delimiter's bytes up to 6 long: refused, or read back as itself."""
    framing = impl.Delimiter(delim)
    decoder = impl.FrameDecoder(framing)
    alphabet = [*sorted(set(delim)), ord("x")]
    written, read = [], []
    for size in range(7):
        for letters in itertools.product(alphabet, repeat=size):
            payload = bytes(letters)
            try:
                wire = framing.encode(payload)
            except FramingError:
                assert (payload + delim).find(delim) < len(payload)  # refused only when it must be
                continue
            assert framing.decode(wire) == (payload, len(wire))
            written.append(payload)
            read += decoder.feed(wire)  # and so does the stream of every frame written
    assert read == written
