"""fastsock.aio flow control, bounded writes, bad input and the end of a connection, both
backends and loops: a Stream nobody reads pauses its transport (bounded memory) and gives
every byte back once read; a reset reaches the reader after the frames before it;
FramedProtocol.pause_reading() stops delivery until resume_reading(); FramedProtocol.drain()
waits for a peer that does not read; write_limit (a keyword of FramedProtocol and of the
connection functions) refuses a send and queues nothing; malformed bytes reach frame_error
after the frames before them; a cancelled byte read (and one cancelled just after its data
arrived) loses nothing."""

from __future__ import annotations

import asyncio
import socket
import struct

import aioutil
import pytest
from aioutil import HOST, server_pair, tls_contexts, turns, until, waiting

from fastsock import RESP, AsciiLength, FramingError, IncompleteReadError, LengthPrefix, Netstring, Varint
from fastsock import aio as fsaio

aio = aioutil.aio  # the backend x loop fixture

#: A Stream pauses reading at 4 x 64 KiB buffered; the reads in flight when it does (a
#: loop may make several before the pause takes effect) add a few more.
BUFFERED_BOUND = 1024 * 1024


def test_unread_stream_pauses_reading_and_loses_nothing(aio):
    small = [b"%06d" % i * 16 for i in range(3000)]  # 96-byte frames, about 300 KB
    big = bytes(range(256)) * 8192  # 2 MiB: more than the high-water mark

    async def main():
        async with server_pair(LengthPrefix(4)) as (client, peer):
            peer.write_frames([*small, big, *small[:10]])
            sending = asyncio.ensure_future(peer.drain())
            await until(lambda: not client.transport.is_reading(), "the reader paused")
            held = client.buffered
            assert 0 < held <= BUFFERED_BOUND
            await turns(10)
            assert client.buffered == held  # paused: nothing more came in
            frames = []
            while len(frames) < len(small):
                frames += await client.read_frames(len(small) - len(frames))
            assert frames == small
            assert await client.read_frame() == big  # waits for more than the mark: reads on
            tail = []
            while len(tail) < 10:
                tail += await client.read_frames()
            assert tail == small[:10]
            await sending

    aio.run(main())


def test_reset_reaches_the_reader_after_buffered_frames(aio):
    async def main():
        accepted = asyncio.get_running_loop().create_future()
        server = await fsaio.start_server(accepted.set_result, HOST, 0, framing=LengthPrefix(4))
        sock = socket.create_connection(server.sockets[0].getsockname()[:2])
        try:
            stream = await accepted
            sock.sendall(b"\x00\x00\x00\x02ok\x00\x00\x00\x05ab")
            await until(lambda: stream.buffered == 12, "12 bytes buffered")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            sock.close()  # with linger 0: a reset
        assert await stream.read_frame() == b"ok"
        with pytest.raises(ConnectionResetError):
            await stream.read_frame()
        assert stream.peek() == b"\x00\x00\x00\x05ab"  # the partial frame is still there
        with pytest.raises(ConnectionResetError):
            await stream.drain()
        await stream.wait_closed()
        server.close()
        await server.wait_closed()

    aio.run(main())


def test_close_wakes_a_waiting_read_with_eof(aio):
    async def main():
        async with server_pair(LengthPrefix(4)) as (client, peer):
            task = asyncio.ensure_future(client.read_frame())
            await waiting(task)
            peer.close()
            with pytest.raises(EOFError):
                await task
            assert client.at_eof()
            client.close()
            await client.wait_closed()
            assert client.is_closing()

    aio.run(main())


# -- FramedProtocol: reading paused, writing paused, write_limit, bad input ----------------

class Served:
    """A loop.create_server on 127.0.0.1 of `factory` protocols: `made` gives the first
    connection's protocol; close() closes every connection's transport, then the server
    (Server.wait_closed waits for every connection since Python 3.12, and a server-side
    transport paused for reading would never see its client go)."""

    def __init__(self, factory):
        self.factory = factory
        self.protocols = []
        self.made = asyncio.get_running_loop().create_future()

    def _make(self):
        proto = self.factory()
        self.protocols.append(proto)
        if not self.made.done():
            self.made.set_result(proto)
        return proto

    async def start(self, **kw):
        self.server = await asyncio.get_running_loop().create_server(self._make, HOST, 0, **kw)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self):
        for proto in self.protocols:
            if proto.transport is not None:
                proto.transport.close()
        self.server.close()
        await self.server.wait_closed()


async def framed_server(factory, **kw):
    """A started Served of `factory` protocols."""
    return await Served(factory).start(**kw)


class QueueFull(fsaio.FramedProtocol):
    """Pauses reading after every frames_received(), as a consumer whose queue is full;
    `resume()` is the consumer catching up. Counts deliveries made while paused."""

    framing = LengthPrefix(4)

    def __init__(self):
        super().__init__()
        self.frames = []
        self.paused = False
        self.while_paused = 0
        self.lost = asyncio.get_running_loop().create_future()

    def frames_received(self, frames):
        if self.paused:
            self.while_paused += 1
        self.frames += frames
        self.paused = True
        self.pause_reading()

    def resume(self):
        self.paused = False
        self.resume_reading()

    def connection_lost(self, exc):
        super().connection_lost(exc)
        self.lost.set_result(exc)


@pytest.mark.parametrize("over", ["tcp", "tls"])
def test_framed_protocol_pause_reading_stops_delivery(aio, over):
    tls = tls_contexts() if over == "tls" else None
    payloads = [b"%05d" % i * 20 for i in range(1500)]  # 100-byte frames, 156 KB on the wire

    async def main():
        served = await framed_server(QueueFull, ssl=tls and tls[0])
        kw = {"ssl": tls[1], "server_hostname": "localhost"} if tls else {}
        client = await fsaio.open_connection(HOST, served.port, framing=LengthPrefix(4), **kw)
        proto = await served.made
        client.write_frame(b"first")
        await until(lambda: proto.paused, "the first delivery")
        assert proto.frames == [b"first"]
        client.write_frames(payloads)
        await client.drain()
        await until(lambda: client.transport.get_write_buffer_size() == 0, "every byte sent")
        resumed = 0
        for _ in range(2000):  # bounded: each round delivers at least one frame
            seen = len(proto.frames)
            await turns(20)  # paused: no delivery however often the loop polls
            assert len(proto.frames) == seen and proto.while_paused == 0
            if seen == len(payloads) + 1:
                break
            proto.resume()
            resumed += 1
            await until(lambda: proto.paused, "the next delivery")
        assert proto.frames == [b"first", *payloads]  # nothing lost, in order
        assert resumed >= 1
        proto.resume()
        client.close()
        await proto.lost
        await served.close()

    aio.run(main())


class Sink(fsaio.FramedProtocol):
    """Keeps every frame; starts with reading paused when `paused` (a peer that does not
    read) and records every frame_error."""

    framing = LengthPrefix(4)

    def __init__(self, framing=None, paused=False, **kw):
        super().__init__(framing, **kw)
        self.start_paused = paused
        self.events = []
        self.frames = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        super().connection_made(transport)
        if self.start_paused:
            self.pause_reading()

    def frames_received(self, frames):
        self.events.append(("frames", list(frames)))
        self.frames += frames

    def frame_error(self, exc):
        self.events.append(("error", exc))
        super().frame_error(exc)

    def connection_lost(self, exc):
        try:
            super().connection_lost(exc)
        finally:
            self.lost.set_result(exc)


class Sender(Sink):
    """A Sink that records the transport's pause_writing()/resume_writing() calls."""

    def __init__(self, framing=None, **kw):
        super().__init__(framing, **kw)
        self.write_calls = []

    def pause_writing(self):
        self.write_calls.append("pause")
        super().pause_writing()

    def resume_writing(self):
        self.write_calls.append("resume")
        super().resume_writing()


@pytest.mark.parametrize("end", ["eof_inside_a_frame", "open"])
def test_framed_protocol_paused_in_connection_made(aio, end):
    # uvloop (and asyncio on Python 3.9/3.10) start reading after connection_made() even if
    # it paused: the protocol itself must hold what comes in until resume_reading().
    partial = b"\x00\x00\x00\x09abc"

    async def main():
        served = await framed_server(lambda: Sink(paused=True))
        client = await fsaio.open_connection(HOST, served.port, framing=LengthPrefix(4))
        peer = await served.made
        client.write_frames([b"a", b"bc"])
        if end == "open":
            await client.drain()
        else:
            client.write(partial)
            client.write_eof()
        await until(lambda: client.transport.get_write_buffer_size() == 0, "every byte sent")
        await turns(50)
        assert peer.events == []  # paused: nothing delivered
        assert not peer.lost.done()
        peer.resume_reading()
        if end == "open":
            await until(lambda: peer.events, "the delivery")
            client.write_frame(b"d")
            await until(lambda: len(peer.frames) == 3, "the frame sent after resuming")
            client.close()
        exc = await peer.lost
        await served.close()
        return peer.events, exc

    events, exc = aio.run(main())
    assert exc is None
    assert [f for kind, batch in events if kind == "frames" for f in batch] == [b"a", b"bc"] + (
        [b"d"] if end == "open" else [])
    if end == "open":
        assert [kind for kind, _ in events] == ["frames", "frames"]
    else:
        assert [kind for kind, _ in events] == ["frames", "error"]
        assert isinstance(events[1][1], IncompleteReadError)
        assert (events[1][1].partial, events[1][1].expected) == (partial, 13)


def test_framed_protocol_drain_waits_for_a_reading_peer(aio):
    limit = 8 * 1024 * 1024
    block = bytes(range(256)) * 256  # 64 KiB

    async def main():
        served = await framed_server(lambda: Sink(paused=True))
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: Sender(write_limit=limit), HOST, served.port)
        peer = await served.made
        sent = 0
        while sent < 2000:  # bounded: fill the socket buffers until the transport pauses
            proto.send_frame(block)
            sent += 1
            if proto.write_calls:
                break
            await asyncio.sleep(0)
        assert proto.write_calls == ["pause"]
        drain = asyncio.ensure_future(proto.drain())
        await waiting(drain, 50)  # the peer does not read: drain() waits
        pending = proto.transport.get_write_buffer_size()
        assert pending > 0
        size = limit - pending + 1  # with the 4-byte header, 5 bytes too many
        with pytest.raises(fsaio.WriteLimitExceeded) as info:
            proto.send_frame(bytes(size))
        assert isinstance(info.value, BufferError)
        assert (info.value.size, info.value.pending, info.value.limit) == (size + 4, pending, limit)
        with pytest.raises(fsaio.WriteLimitExceeded):
            proto.send_frames([b"a", bytes(size)])
        assert proto.transport.get_write_buffer_size() == pending  # nothing queued
        await waiting(drain, 5)
        peer.resume_reading()  # the peer reads: drain() completes
        await drain
        assert proto.write_calls == ["pause", "resume"]
        await until(lambda: len(peer.frames) == sent, f"{sent} frames at the peer")
        assert peer.frames == [block] * sent
        await proto.drain()  # not paused: at once
        proto.transport.close()
        await peer.lost
        await served.close()

    aio.run(main())


def test_stream_drain_waits_after_write_frames(aio):
    # write_frames() queues with transport.writelines(), which on Python 3.12.0-3.12.8 and
    # 3.13.0-3.13.1 never paused the protocol (cpython#127655): drain() must wait all the same.
    block = bytes(range(256)) * 256  # 64 KiB

    async def main():
        async with server_pair(LengthPrefix(4)) as (client, peer):
            peer.transport.pause_reading()  # a peer that does not read
            sent = 0
            drain = None
            while sent < 2000:  # bounded: write until drain() has to wait
                client.write_frames([block, block])
                sent += 2
                drain = asyncio.ensure_future(client.drain())
                await turns(2)
                if not drain.done():
                    break
                await drain
            await waiting(drain, 50)
            peer.transport.resume_reading()  # the peer reads: drain() completes
            frames = []
            while len(frames) < sent:
                frames += await peer.read_frames()
            await drain
            assert frames == [block] * sent

    aio.run(main())


def test_write_limit_keyword_refuses_and_queues_nothing(aio):
    async def main():
        loop = asyncio.get_running_loop()
        served = await framed_server(Sink)
        _, proto = await loop.create_connection(lambda: Sender(write_limit=100), HOST, served.port)
        peer = await served.made
        with pytest.raises(fsaio.WriteLimitExceeded) as one:
            proto.send_frame(b"x" * 97)  # 101 bytes framed
        with pytest.raises(fsaio.WriteLimitExceeded) as many:
            proto.send_frames([b"a" * 40, b"b" * 40, b"c" * 20])  # 112
        assert (one.value.size, one.value.pending, one.value.limit) == (101, 0, 100)
        assert (many.value.size, many.value.pending, many.value.limit) == (112, 0, 100)
        assert proto.transport.get_write_buffer_size() == 0
        proto.send_frame(b"y" * 96)  # exactly the limit: sent
        await until(lambda: peer.frames, "a frame at the peer")
        assert peer.frames == [b"y" * 96]  # the refused sends queued nothing
        proto.transport.close()
        await peer.lost
        await served.close()

        # The connection functions' keyword: start_server's streams and open_connection's.
        def refuse(stream):
            for write in (lambda: stream.write(b"z" * 51), lambda: stream.write_frame(b"z" * 47),
                          lambda: stream.write_frames([b"z" * 22, b"z" * 22]),
                          lambda: stream.writelines([b"z" * 30, b"z" * 30])):
                with pytest.raises(fsaio.WriteLimitExceeded) as info:
                    write()
                assert info.value.limit == 50
            stream.write_frame(b"w" * 46)  # 50: sent
            stream.close()

        server = await fsaio.start_server(refuse, HOST, 0, framing=LengthPrefix(4), write_limit=50)
        client = await fsaio.open_connection(HOST, server.sockets[0].getsockname()[1], framing=LengthPrefix(4),
                                             write_limit=20)
        with pytest.raises(fsaio.WriteLimitExceeded) as info:
            client.write_frame(b"v" * 17)
        assert (info.value.size, info.value.limit) == (21, 20)
        assert await client.read_frame() == b"w" * 46  # the first frame is the one that fit
        with pytest.raises(EOFError):
            await client.read_frame()
        client.close()
        server.close()
        await server.wait_closed()

    aio.run(main())
    assert aio.errors == []  # the server callback's assertions held


def test_write_limit_none_and_bad_values(aio):
    big = LengthPrefix(4, max_size=32 * 1024 * 1024)
    over_default = bytes(fsaio.DEFAULT_WRITE_LIMIT + 1)

    async def main():
        loop = asyncio.get_running_loop()
        served = await framed_server(lambda: Sink(paused=True))
        _, limited = await loop.create_connection(lambda: Sender(big), HOST, served.port)
        with pytest.raises(fsaio.WriteLimitExceeded) as info:  # the default: 16 MiB
            limited.send_frame(over_default)
        assert info.value.limit == fsaio.DEFAULT_WRITE_LIMIT
        _, unlimited = await loop.create_connection(lambda: Sender(big, write_limit=None), HOST, served.port)
        unlimited.send_frame(over_default)  # no limit
        assert unlimited.transport.get_write_buffer_size() > 0
        for proto in (limited, unlimited):
            proto.transport.abort()
        await served.close()
        for bad, error in ((0, ValueError), (-1, ValueError), ("many", TypeError), (1.5, TypeError)):
            with pytest.raises(error):
                fsaio.FramedProtocol(LengthPrefix(4), write_limit=bad)
            with pytest.raises(error):
                await fsaio.open_connection(HOST, 9, write_limit=bad)  # refused before connecting
            with pytest.raises(error):
                await fsaio.start_server(lambda stream: None, HOST, 0, write_limit=bad)

    aio.run(main())


BAD_INPUT = {
    "Netstring": (Netstring(), b"2:ok,1:x,", b"3:abcX"),
    "RESP": (RESP(), b"*1\r\n$2\r\nok\r\n*1\r\n$1\r\nx\r\n", b"*1\r\n$x\r\n"),
    "AsciiLength": (AsciiLength(), b"00002ok00001x", b"00x1"),
    "Varint": (Varint(), b"\x02ok\x01x", b"\x80" * 11),
}
GOOD = {"RESP": [[b"ok"], [b"x"]]}


@pytest.mark.parametrize("when", ["same_read", "later_read"])
@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_framed_protocol_framing_error(aio, name, when):
    framing, good, bad = BAD_INPUT[name]

    async def main():
        served = await framed_server(lambda: Sink(framing))
        client = await fsaio.open_connection(HOST, served.port)
        proto = await served.made
        if when == "same_read":
            client.write(good + bad)
        else:
            client.write(good)
            await until(lambda: len(proto.frames) == 2, "the good frames")
            client.write(bad)
        exc = await proto.lost  # the default frame_error closed the transport
        assert await client.read() == b""  # ... which the client reads as EOF
        client.close()
        await served.close()
        return proto.events, exc

    events, lost = aio.run(main())
    assert lost is None
    assert [kind for kind, _ in events][-1:] == ["error"]
    assert [kind for kind, _ in events].count("error") == 1
    assert [f for kind, batch in events[:-1] for f in batch] == GOOD.get(name, [b"ok", b"x"])
    assert isinstance(events[-1][1], FramingError)


# -- cancellation of the byte reads ----------------------------------------------------------

async def _read_into(stream):
    buf = bytearray(10)
    size = await stream.read_exactly_into(buf)
    return size, bytes(buf)


async def _anext(stream):
    async for frame in stream:
        return frame
    return None


#: name -> (the read, bytes sent before it is cancelled, bytes sent after, EOF after, result)
BYTE_READS = {
    "read_exactly_into": (_read_into, b"012", b"3456789", False, (10, b"0123456789")),
    "read_n": (lambda s: s.read(5), b"", b"hello", False, b"hello"),
    "read_to_eof": (lambda s: s.read(), b"abc", b"def", True, b"abcdef"),
    "async_for": (_anext, b"\x00\x00\x00", b"\x03abc", False, b"abc"),
    # test_aio_stream cancels these while they wait; here also just after their data came
    "read_frame": (lambda s: s.read_frame(), b"\x00\x00\x00", b"\x03abc", False, b"abc"),
    "read_frames": (lambda s: s.read_frames(), b"\x00\x00", b"\x00\x01z", False, [b"z"]),
    "read_exactly": (lambda s: s.read_exactly(6), b"ab", b"cdef", False, b"abcdef"),
    "readline": (lambda s: s.readline(), b"one", b" two\n", False, b"one two\n"),
    "read_until": (lambda s: s.read_until(b"!!"), b"hey!", b"!", False, b"hey!!"),
}
COVERED = {"read_frame", "read_frames", "read_exactly", "readline", "read_until"}
# after_data: not for read_to_eof, which only EOF wakes (cancelled with its data in, it is
# the "cancel" case again)
CASES = [(read, how) for read in BYTE_READS for how in ("cancel", "wait_for", "after_data")
         if (how == "after_data" and not BYTE_READS[read][3]) or (how != "after_data" and read not in COVERED)]


@pytest.mark.parametrize("read,how", CASES, ids=[f"{r}-{h}" for r, h in CASES])
def test_cancelled_or_just_woken_read_loses_nothing(aio, read, how):
    call, first, rest, eof, result = BYTE_READS[read]

    async def main():
        async with server_pair(LengthPrefix(4)) as (client, peer):
            if first:
                peer.write(first)
                await until(lambda: client.buffered == len(first), "the first bytes")
            if how == "wait_for":
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(call(client), 0.05)
            else:
                task = asyncio.ensure_future(call(client))
                await waiting(task)
                if how == "after_data":
                    # The data wakes the read; cancel it before it runs again (this task
                    # runs first in each loop turn: it polls with sleep(0)).
                    peer.write(rest)
                    for _ in range(100_000):  # bounded
                        if client.buffered == len(first + rest):
                            break
                        await asyncio.sleep(0)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert task.cancelled()
                assert client.buffered == len(first + rest if how == "after_data" else first)
            if how != "after_data":
                peer.write(rest)
            if eof:
                peer.write_eof()
            return await call(client)

    assert aio.run(main()) == result


def test_framed_protocol_reset_inside_a_frame_reports_the_cut_frame(aio):
    # No EOF comes before a reset: connection_lost() reports the partial frame through
    # frame_error(IncompleteReadError) before the loss, so it is never dropped silently.
    async def main():
        loop = asyncio.get_running_loop()
        made = loop.create_future()

        def factory():
            proto = Sink()
            made.set_result(proto)
            return proto

        server = await loop.create_server(factory, HOST, 0)
        sock = socket.create_connection(server.sockets[0].getsockname()[:2])
        try:
            sink = await made
            sock.sendall(b"\x00\x00\x00\x02ok\x00\x00\x00\x05ab")
            await until(lambda: sink.buffered == 6, "the partial frame held")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            sock.close()  # with linger 0: a reset
        lost = await sink.lost
        server.close()
        await server.wait_closed()
        return sink.events, lost

    events, lost = aio.run(main())
    assert [kind for kind, _ in events] == ["frames", "error"]
    assert events[0][1] == [b"ok"]
    error = events[1][1]
    assert isinstance(error, IncompleteReadError)
    assert (error.partial, error.expected) == (b"\x00\x00\x00\x05ab", 9)
    assert isinstance(lost, ConnectionResetError)


class Cutter(Sink):
    """A Sink whose frames_received pauses reading after the first batch when `pause_after`."""

    def __init__(self, pause_after=False, **kw):
        super().__init__(**kw)
        self.pause_after = pause_after

    def frames_received(self, frames):
        super().frames_received(frames)
        if self.pause_after:
            self.pause_reading()


async def _reset_after(sink_factory, data, settle):
    """A server protocol from `sink_factory`; a client sends `data` then resets. Returns
    the protocol once its connection is lost."""
    loop = asyncio.get_running_loop()
    made = loop.create_future()

    def factory():
        proto = sink_factory()
        made.set_result(proto)
        return proto

    server = await loop.create_server(factory, HOST, 0)
    sock = socket.create_connection(server.sockets[0].getsockname()[:2])
    try:
        proto = await made
        sock.sendall(data)
        await until(lambda: settle(proto), "the bytes arrived")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()
    proto.transport.write(b"x" * 100)  # a paused reader learns of the reset from its writes
    await proto.lost
    server.close()
    await server.wait_closed()
    return proto


def test_paused_protocol_still_reports_the_cut_frame(aio):
    # Paused from frames_received with a partial frame in the buffer (nothing held): the
    # loss reports it all the same.
    async def main():
        proto = await _reset_after(lambda: Cutter(pause_after=True),
                                   b"\x00\x00\x00\x02ok\x00\x00\x00\x05ab", lambda p: p.buffered == 6)
        return proto.events

    events = aio.run(main())
    assert [kind for kind, _ in events] == ["frames", "error"]
    assert events[0][1] == [b"ok"]
    assert isinstance(events[1][1], IncompleteReadError)
    assert events[1][1].partial == b"\x00\x00\x00\x05ab"


class ReadingOnTransport:
    """A transport that, like uvloop's (or asyncio's on 3.9/3.10) after a pause made in
    connection_made, goes on handing the protocol bytes: the held-bytes path, on any loop."""

    def __init__(self):
        self.calls = []

    def pause_reading(self):
        self.calls.append("pause")

    def resume_reading(self):
        self.calls.append("resume")

    def close(self):
        self.calls.append("close")

    def is_closing(self):
        return "close" in self.calls

    def get_extra_info(self, name, default=None):
        return default

    def get_write_buffer_size(self):
        return 0


def test_frames_held_while_paused_come_before_the_cut_frame_report(aio):
    # Paused, bytes held undecoded, then the connection is lost (a reset): nothing is
    # delivered at the loss; resuming delivers the complete frames first, then reports the
    # cut one. And resumed but lost before the delivery's turn: the frames come first too.
    data = b"\x00\x00\x00\x02ok\x00\x00\x00\x01x\x00\x00\x00\x05ab"

    def receive(proto):
        view = proto.get_buffer(-1)
        view[:len(data)] = data
        proto.buffer_updated(len(data))

    async def main():
        still_paused = Sink(paused=True)
        still_paused.connection_made(ReadingOnTransport())
        receive(still_paused)
        assert still_paused.buffered == 17
        still_paused.connection_lost(ConnectionResetError())
        assert still_paused.events == []  # nothing while paused, not even at the loss
        still_paused.resume_reading()
        await turns(3)
        resumed = Sink(paused=True)
        resumed.connection_made(ReadingOnTransport())
        receive(resumed)
        resumed.resume_reading()  # its delivery is scheduled for the next turn...
        resumed.connection_lost(ConnectionResetError())  # ...but the loss comes first
        await turns(3)
        return still_paused.events, resumed.events

    for events in aio.run(main()):
        assert events[0] == ("frames", [b"ok", b"x"])
        assert len(events) == 2 and isinstance(events[1][1], IncompleteReadError)
        assert events[1][1].partial == b"\x00\x00\x00\x05ab"


def test_a_failing_frame_error_still_wakes_drain(aio):
    class Failing(Sink):
        def frame_error(self, exc):
            super().frame_error(exc)
            raise RuntimeError("the application's own bug")

    async def main():
        proto = await _reset_after(Failing, b"\x00\x00\x00\x05ab", lambda p: p.buffered == 6)
        with pytest.raises(ConnectionResetError):
            await proto.drain()  # woken by connection_lost although frame_error raised
        return proto.events

    events = aio.run(main())
    assert [kind for kind, _ in events] == ["error"]
    assert any("the application's own bug" in str(ctx.get("exception")) for ctx in aio.errors)


def test_a_protocol_serves_a_second_connection(aio):
    # One protocol instance reused for two connections (a factory returning the same
    # object): the read path keeps working after the first connection_lost.
    async def main():
        loop = asyncio.get_running_loop()
        proto = Sink()
        server = await loop.create_server(lambda: proto, HOST, 0)
        for i in range(2):
            proto.lost = loop.create_future()
            with socket.create_connection(server.sockets[0].getsockname()[:2]) as sock:
                sock.sendall(b"\x00\x00\x00\x01" + b"%d" % i)
                await until(lambda n=i + 1: len(proto.frames) == n, "the frame")
            await proto.lost
        server.close()
        await server.wait_closed()
        return proto.frames

    assert aio.run(main()) == [b"0", b"1"]
