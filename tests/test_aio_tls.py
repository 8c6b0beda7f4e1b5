"""fastsock.aio over TLS (`ssl=` passed through to the loop; the decoder sees plaintext), both
backends and both loops: frames of several framings, two of them larger than asyncio's
256 KiB TLS read, round-trip in random chunkings through aio.Stream and FramedProtocol; EOF
inside a frame gives IncompleteReadError with the exact partial; the TLS object is there.

Receiving under TLS goes through the loop's sslproto, which calls get_buffer() with its own
size hint and (asyncio's) keeps the previous view alive across the next get_buffer(): the
large frames make the decoder grow its buffer under those views (the compiled decoder must
retire the old block, not free it)."""

from __future__ import annotations

import asyncio
import random
import ssl

import aioutil
import pytest
from aioutil import HOST, nodelay, tls_contexts, until

from fastsock import RESP, Delimiter, IncompleteReadError, LengthPrefix, Netstring, Varint
from fastsock import aio as fsaio

aio = aioutil.aio  # the backend x loop fixture

FRAMINGS = {
    "LengthPrefix4": lambda: LengthPrefix(4),
    "Varint": Varint,
    "Delimiter": lambda: Delimiter(b"\r\n"),
    "Netstring": Netstring,
    "RESP": RESP,
}
#: Payload sizes above the 256 KiB asyncio's sslproto reads at a time, and above the decoder's
#: 1 MiB growth step.
BIG = (256 * 1024 + 4099, 1200 * 1024)


@pytest.fixture(scope="module")
def tls():
    """(server_ctx, client_ctx), made once for the module (a CA and a certificate)."""
    return tls_contexts()


def client_kw(tls):
    return {"ssl": tls[1], "server_hostname": "localhost"}


def payloads_for(name, rng):
    """20 small payloads with the two large ones among them (RESP: SET commands)."""
    def blob(size):
        data = rng.randbytes(size)
        return data.replace(b"\r\n", b"..") if name == "Delimiter" else data

    small = [blob(rng.randrange(300)) for _ in range(20)]
    payloads = [*small[:10], blob(BIG[0]), *small[10:], blob(BIG[1]), blob(5)]
    if name == "RESP":
        return [[b"SET", b"k%d" % i, p] for i, p in enumerate(payloads)]
    return payloads


def wire_and_pieces(impl, framing, payloads, rng):
    """The encoded bytes of `payloads`, cut at random: 1..7-byte pieces (now and then a few
    hundred bytes) in the small frames, up to 64 KiB inside the large ones, the cuts
    crossing frame boundaries."""
    encoder = impl.FrameEncoder(framing)
    encoded = [b"".join(encoder.encode(p)) for p in payloads]
    wire = b"".join(encoded)
    coarse = []
    at = 0
    for frame in encoded:
        if len(frame) > 65536:
            coarse.append((at, at + len(frame)))
        at += len(frame)
    pieces = []
    i = 0
    while i < len(wire):
        if any(start <= i < end for start, end in coarse):
            size = rng.randint(1, 65536)
        else:
            size = rng.randint(1, 7) if rng.random() < 0.9 else rng.randint(8, 400)
        pieces.append(wire[i:i + size])
        i += size
    return wire, pieces


def assert_tls(transport_or_stream):
    obj = transport_or_stream.get_extra_info("ssl_object")
    assert isinstance(obj, (ssl.SSLObject, ssl.SSLSocket)), obj
    assert obj.version().startswith("TLS"), obj.version()


@pytest.mark.parametrize("name", list(FRAMINGS))
def test_stream_round_trip_over_tls(aio, tls, name):
    rng = random.Random(name)
    framing = FRAMINGS[name]()
    payloads = payloads_for(name, rng)
    _, pieces = wire_and_pieces(aio.impl, framing, payloads, rng)
    received = []

    async def echo(stream):
        # The server's decoder gets the random pieces; the client's the echoed frames.
        try:
            assert_tls(stream)
            async for frame in stream:
                received.append(frame)
                stream.write_frame(frame)
                await stream.drain()
        finally:
            stream.close()

    async def main():
        server = await fsaio.start_server(echo, HOST, 0, framing=framing, ssl=tls[0])
        port = server.sockets[0].getsockname()[1]
        client = await fsaio.open_connection(HOST, port, framing=framing, **client_kw(tls))
        nodelay(client)
        assert_tls(client)
        assert client.get_extra_info("peercert")["subjectAltName"] == (("DNS", "localhost"),)
        writer = asyncio.ensure_future(aioutil.write_pieces(client, pieces))
        got = [await client.read_frame()]
        got += await client.read_frames(3)
        async for frame in client:
            got.append(frame)
            if len(got) == len(payloads):
                break
        await writer
        client.close()
        await client.wait_closed()
        server.close()
        await server.wait_closed()
        return got

    got = aio.run(main())
    assert got == payloads
    assert received == payloads
    assert aio.errors == []


async def _cut_server(tls, data, framing=None):
    """A TLS server that sends `data` to its one client and closes (close_notify): returns
    (server, client Stream)."""
    async def send(stream):
        stream.write(data)
        await stream.drain()
        stream.close()

    server = await fsaio.start_server(send, HOST, 0, framing=framing, ssl=tls[0])
    client = await fsaio.open_connection(HOST, server.sockets[0].getsockname()[1], framing=framing,
                                         **client_kw(tls))
    return server, client


def test_stream_eof_mid_frame_over_tls(aio, tls):
    big_partial = b"\x00\x06\x1a\x80" + random.Random(1).randbytes(300 * 1024)  # of 400_000 bytes

    async def main():
        server, client = await _cut_server(tls, b"\x00\x00\x00\x02ok\x00\x00\x00\x09abc", LengthPrefix(4))
        assert await client.read_frame() == b"ok"
        with pytest.raises(IncompleteReadError) as small:
            await client.read_frame()
        assert client.at_eof()
        client.close()
        server.close()
        await server.wait_closed()

        server, client = await _cut_server(tls, big_partial, LengthPrefix(4))
        with pytest.raises(IncompleteReadError) as big:
            await client.read_frame()
        with pytest.raises(EOFError):  # the partial frame was consumed by the error
            await client.read_frame()
        client.close()
        server.close()
        await server.wait_closed()

        server, client = await _cut_server(tls, b"abc")
        with pytest.raises(IncompleteReadError) as exact:
            await client.read_exactly(5)
        client.close()
        server.close()
        await server.wait_closed()
        return small.value, big.value, exact.value

    small, big, exact = aio.run(main())
    assert (small.partial, small.expected) == (b"\x00\x00\x00\x09abc", 13)
    assert big.partial == big_partial
    assert big.expected == 400_004
    assert (exact.partial, exact.expected) == (b"abc", 5)


class Echo(fsaio.FramedProtocol):
    """Sends back each read's frames with one send_frames(); records what happened."""

    def __init__(self, framing):
        super().__init__(framing)
        self.events = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        super().connection_made(transport)
        assert_tls(transport)

    def frames_received(self, frames):
        self.events.append(("frames", list(frames)))
        self.send_frames(frames)

    def frame_error(self, exc):
        self.events.append(("error", exc))
        super().frame_error(exc)

    def connection_lost(self, exc):
        super().connection_lost(exc)
        self.lost.set_result(exc)


class Collect(fsaio.FramedProtocol):
    """The client side: keeps every frame; `full` is done once `want` frames arrived."""

    def __init__(self, framing, want):
        super().__init__(framing)
        self.frames = []
        self.want = want
        self.full = asyncio.get_running_loop().create_future()

    def frame_received(self, frame):
        self.frames.append(frame)
        if len(self.frames) >= self.want and not self.full.done():
            self.full.set_result(None)


async def _framed_pair(tls, framing, want):
    loop = asyncio.get_running_loop()
    made = loop.create_future()

    def factory():
        proto = Echo(framing)
        made.set_result(proto)
        return proto

    server = await loop.create_server(factory, HOST, 0, ssl=tls[0])
    port = server.sockets[0].getsockname()[1]
    transport, client = await loop.create_connection(lambda: Collect(framing, want), HOST, port,
                                                     **client_kw(tls))
    return server, transport, client, await made


@pytest.mark.parametrize("name", ["LengthPrefix4", "Delimiter", "RESP"])
def test_framed_protocol_round_trip_over_tls(aio, tls, name):
    rng = random.Random("framed" + name)
    framing = FRAMINGS[name]()
    payloads = payloads_for(name, rng)
    _, pieces = wire_and_pieces(aio.impl, framing, payloads, rng)

    async def main():
        server, transport, client, echo = await _framed_pair(tls, framing, len(payloads) + 3)
        assert_tls(transport)
        for piece in pieces:  # the server's decoder receives random pieces
            transport.write(piece)
            await client.drain()
            await asyncio.sleep(0)
        client.send_frames(payloads[:3])  # and three encoded by the client's own FrameEncoder
        await client.full
        transport.close()
        await echo.lost
        server.close()
        await server.wait_closed()
        return client.frames, echo.events

    frames, events = aio.run(main())
    assert frames == [*payloads, *payloads[:3]]
    assert [f for kind, batch in events for f in batch] == frames  # no frame_error
    assert aio.errors == []


def test_framed_protocol_eof_mid_frame_over_tls(aio, tls):
    partial = b"\x00\x04\x00\x00" + bytes(70_000)  # of a 262_148-byte frame

    async def main():
        server, transport, client, echo = await _framed_pair(tls, LengthPrefix(4), 1)
        transport.write(b"\x00\x00\x00\x02ok" + partial)
        await client.full  # the echo of b"ok": the partial frame is being received
        await until(lambda: echo.buffered == len(partial), "the partial frame held")
        transport.close()  # close_notify: EOF inside the frame
        await echo.lost
        server.close()
        await server.wait_closed()
        return client.frames, echo.events

    frames, events = aio.run(main())
    assert frames == [b"ok"]
    # asyncio's TLS before 3.11 (its old sslproto) reports the peer's close_notify with
    # connection_lost() alone, never eof_received(): FramedProtocol.connection_lost reports
    # the cut frame then. uvloop's TLS, and asyncio's since 3.11, report the EOF.
    assert [kind for kind, _ in events] == ["frames", "error"]
    assert events[0][1] == [b"ok"]
    error = events[1][1]
    assert isinstance(error, IncompleteReadError)
    assert (error.partial, error.expected) == (partial, 262_148)
