"""fastsock.aio.FramedProtocol's read path, `_FrameDelivery` (C in the compiled backend, its
pure twin in fastsock/_py/decoder.py), on both backends: the transport's buffer_updated()
calls go to frames_received, _hold, _bad_frame or _deliver exactly as FramedProtocol's own
Python method sends them, and a protocol whose connection is lost is freed by reference
counting (close() ends the protocol -> delivery -> protocol cycle)."""

from __future__ import annotations

import gc
import weakref

import aioutil
import pytest

from fastsock import FrameTooLarge, LengthPrefix
from fastsock import aio as fsaio
from fastsock.framing import FramingError

aio = aioutil.aio  # the backend x loop fixture (here: the backend patched into fastsock.aio)


class Recorder:
    """A stand-in protocol recording what the delivery calls."""

    def __init__(self, decoder=None):
        self.calls = []
        self.decoder = decoder

    def frames_received(self, frames):
        self.calls.append(("frames", frames))

    def _hold(self, nbytes):
        self.calls.append(("hold", nbytes))
        self.decoder.commit(nbytes)  # as FramedProtocol._hold: kept, undecoded

    def _bad_frame(self, exc):
        self.calls.append(("bad", exc))

    def _deliver(self, frames):
        self.calls.append(("deliver", frames))


def _write(decoder, data, hint=-1):
    view = decoder.get_buffer(hint)
    view[:len(data)] = data
    return len(data)


def test_delivery_routes_every_read(impl):
    dec = impl.FrameDecoder(LengthPrefix(4), max_buffer=16)
    proto = Recorder(dec)
    deliver = impl._FrameDelivery(dec, proto)
    deliver(_write(dec, b"\0\0\0\2ok\0\0\0\1x\0"))  # two frames and a partial header
    assert proto.calls == [("frames", [b"ok", b"x"])]
    deliver(_write(dec, b"\0"))  # still partial, room left: nothing to say
    assert len(proto.calls) == 1
    deliver.paused = True
    deliver(_write(dec, b"\0\3"))
    assert proto.calls[-1] == ("hold", 2) and dec.buffered == 4  # held, undecoded
    deliver.paused = False
    deliver(_write(dec, b"abc\0\0\0\x20"))  # a frame, then a header announcing 32 > 16 bytes
    kind, exc = proto.calls[-1]
    assert kind == "bad" and isinstance(exc, FrameTooLarge) and exc.frames == [b"abc"]


def test_delivery_reports_a_full_buffer_and_malformed_bytes(impl):
    dec = impl.FrameDecoder(impl.Delimiter(b"\n"), max_buffer=8)
    proto = Recorder()
    deliver = impl._FrameDelivery(dec, proto)
    deliver(_write(dec, b"abcdefgh"))  # max_buffer held, no delimiter: no frame can end
    assert proto.calls == [("deliver", [])]
    dec2 = impl.FrameDecoder(impl.Netstring())
    proto2 = Recorder()
    deliver2 = impl._FrameDelivery(dec2, proto2)
    deliver2(_write(dec2, b"2:ok,x:"))
    kind, exc = proto2.calls[-1]
    assert kind == "bad" and isinstance(exc, FramingError) and exc.frames == [b"ok"]


def test_delivery_without_its_protocol_only_commits(impl):
    # The delivery holds its protocol weakly (the protocol holds the delivery): once the
    # protocol is gone, what the transport read is committed and nothing else happens.
    dec = impl.FrameDecoder(LengthPrefix(4))
    proto = Recorder(dec)
    deliver = impl._FrameDelivery(dec, proto)
    del proto
    gc.collect()
    deliver(_write(dec, b"\0\0\0\2ok"))
    assert dec.buffered == 6
    with pytest.raises(RuntimeError):  # each get_buffer allows one commit
        deliver(1)


def test_delivery_looks_frames_received_up_per_call(impl):
    dec = impl.FrameDecoder(LengthPrefix(4))
    proto = Recorder(dec)
    deliver = impl._FrameDelivery(dec, proto)
    got = []
    proto.frames_received = got.append  # replaced after the delivery was made
    deliver(_write(dec, b"\0\0\0\1a"))
    assert got == [[b"a"]] and proto.calls == []


def test_delivery_checks_its_arguments(impl):
    dec = impl.FrameDecoder(LengthPrefix(4))
    with pytest.raises(TypeError):
        impl._FrameDelivery(b"not a decoder", Recorder())
    deliver = impl._FrameDelivery(dec, Recorder())
    with pytest.raises(RuntimeError):  # no get_buffer() pending
        deliver(1)
    dec.get_buffer(8)
    with pytest.raises(ValueError):
        deliver(-1)


class Echo(fsaio.FramedProtocol):
    framing = LengthPrefix(4)

    def frames_received(self, frames):
        self.send_frames(frames)


def test_framed_protocol_uses_the_delivery_and_is_freed_after_connection_lost(aio):
    async def main():
        import asyncio

        loop = asyncio.get_running_loop()
        made = []

        def factory():
            proto = Echo()
            made.append(proto)
            return proto

        server = await loop.create_server(factory, aioutil.HOST, 0)
        stream = await fsaio.open_connection(*server.sockets[0].getsockname()[:2], framing=LengthPrefix(4))
        stream.write_frames([b"one", b"two"])
        assert [await stream.read_frame(), await stream.read_frame()] == [b"one", b"two"]
        proto = made.pop()
        assert isinstance(proto.buffer_updated, aio.impl._FrameDelivery)
        ref = weakref.ref(proto)
        del proto
        stream.close()
        await stream.wait_closed()
        server.close()
        await server.wait_closed()
        await aioutil.until(lambda: ref() is None, "the server's protocol freed")
        return ref

    gc.disable()  # freed by reference counting alone, not by a collection
    try:
        ref = aio.run(main())
        assert ref() is None
    finally:
        gc.enable()
