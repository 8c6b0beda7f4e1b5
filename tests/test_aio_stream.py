"""fastsock.aio.Stream on both backends and both loops: every framing through random
chunkings, the byte reads, EOF, limits, cancellation, write_limit, AF_UNIX, servers."""

from __future__ import annotations

import asyncio
import random

import aioutil
import pytest
from aioutil import HOST, chunks, server_pair, waiting, write_pieces

from fastsock import (
    RESP,
    AsciiLength,
    Delimiter,
    FixedLength,
    FrameTooLarge,
    IncompleteReadError,
    LengthPrefix,
    Netstring,
    Varint,
)
from fastsock import aio as fsaio

aio = aioutil.aio  # the backend x loop fixture

FRAMINGS = [
    ("LengthPrefix4", lambda: LengthPrefix(4), b"x"),
    ("LengthPrefix1", lambda: LengthPrefix(1), b"y"),
    ("Varint", lambda: Varint(), b"v"),
    ("Delimiter", lambda: Delimiter(b"\r\n"), b"d"),
    ("FixedLength", lambda: FixedLength(5), None),
    ("AsciiLength", lambda: AsciiLength(), b"a"),
    ("Netstring", lambda: Netstring(), b"n"),
    ("RESP", lambda: RESP(), None),
]


def payloads_for(name, rng):
    if name == "FixedLength":
        return [bytes([65 + i % 26]) * 5 for i in range(30)]
    if name == "RESP":
        return [[b"SET", b"k%d" % i, bytes(rng.randrange(200))] for i in range(30)]
    top = 200 if name == "LengthPrefix1" else 3000
    return [bytes(rng.randrange(256) for _ in range(rng.randrange(top))).replace(b"\r\n", b"..")
            for _ in range(30)]


@pytest.mark.parametrize("name,make,_", FRAMINGS, ids=[f[0] for f in FRAMINGS])
def test_round_trip_random_chunks(aio, name, make, _):
    rng = random.Random(name)
    framing = make()
    payloads = payloads_for(name, rng)
    wire = b"".join(b"".join(aio.impl.FrameEncoder(framing).encode(p)) for p in payloads)

    async def main():
        async with server_pair(framing) as (client, peer):
            writer = asyncio.ensure_future(write_pieces(peer, chunks(wire, rng)))
            got = [await client.read_frame()]
            got += await client.read_frames(3)
            async for frame in client:
                got.append(frame)
                if len(got) == len(payloads):
                    break
            await writer
            peer.write_frames(payloads[:2])
            peer.write_eof()
            got2 = await client.read_frames()
            while len(got2) < 2:
                got2 += await client.read_frames()
            with pytest.raises(EOFError):
                await client.read_frame()
            assert await client.read_frames() == []
            assert client.at_eof()
            return got, got2

    got, got2 = aio.run(main())
    assert got == payloads
    assert got2 == payloads[:2]


def test_byte_reads(aio):
    async def main():
        async with server_pair() as (client, peer):
            peer.write(b"line one\nabcXYZ--rest0123456789")
            assert await client.readline() == b"line one\n"
            assert await client.read_until(b"XYZ") == b"abcXYZ"
            assert await client.read_until((b"!", b"--"), keep=False) == b""
            assert await client.read_exactly(4) == b"rest"
            while client.buffered < 10:
                await asyncio.sleep(0.001)
            assert client.peek(3) == b"012"
            buf = bytearray(4)
            assert await client.read_exactly_into(buf) == 4
            assert buf == b"0123"
            assert await client.read(100) == b"456789"
            peer.write(b"tail")
            peer.write_eof()
            assert await client.read() == b"tail"
            assert client.at_eof()
            assert await client.read(5) == b""
            assert await client.readline() == b""

    aio.run(main())


def test_eof_mid_frame(aio):
    async def main():
        async with server_pair(LengthPrefix(4)) as (client, peer):
            peer.write(b"\x00\x00\x00\x02ok\x00\x00\x00\x09abc")
            peer.write_eof()
            assert await client.read_frame() == b"ok"
            with pytest.raises(IncompleteReadError) as info:
                await client.read_frame()
            assert info.value.partial == b"\x00\x00\x00\x09abc"
            assert info.value.expected == 13
        async with server_pair() as (client, peer):
            peer.write(b"abc")
            peer.write_eof()
            with pytest.raises(IncompleteReadError) as info:
                await client.read_exactly(5)
            assert info.value.partial == b"abc"
            assert info.value.expected == 5

    aio.run(main())


def test_frame_too_large_before_allocation(aio):
    async def main():
        async with server_pair(LengthPrefix(4), client_kw={"max_buffer": 1024}) as (client, peer):
            peer.write(b"\x7f\xff\xff\xff")
            with pytest.raises(FrameTooLarge):
                await client.read_frame()
            assert client.buffered == 4  # the bytes stay buffered
            with pytest.raises(FrameTooLarge):
                await client.read_exactly(2000)

    aio.run(main())


READS = {
    "read_frame": lambda s: s.read_frame(),
    "read_frames": lambda s: s.read_frames(),
    "read_exactly": lambda s: s.read_exactly(10),
    "readline": lambda s: s.readline(),
    "read_until": lambda s: s.read_until(b"!"),
}
EXPECT = {
    "read_frame": b"\x00\x00\x00\x06abcdef",
    "read_frames": b"\x00\x00\x00\x06abcdef",
    "read_exactly": b"0123456789",
    "readline": b"01234\n",
    "read_until": b"01234!",
}
RESULT = {"read_frame": b"abcdef", "read_frames": [b"abcdef"], "read_exactly": b"0123456789",
          "readline": b"01234\n", "read_until": b"01234!"}


@pytest.mark.parametrize("how", ["cancel", "wait_for"])
@pytest.mark.parametrize("read", list(READS))
def test_cancelled_read_loses_nothing(aio, read, how):
    wire = EXPECT[read]

    async def main():
        async with server_pair(LengthPrefix(4)) as (client, peer):
            peer.write(wire[:3])
            await peer.drain()
            if how == "cancel":
                task = asyncio.ensure_future(READS[read](client))
                await waiting(task)
                while client.buffered < 3:
                    await asyncio.sleep(0.001)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            else:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(READS[read](client), 0.05)
            peer.write(wire[3:])
            return await READS[read](client)

    assert aio.run(main()) == RESULT[read]


def test_second_concurrent_read(aio):
    async def main():
        async with server_pair(LengthPrefix(4)) as (client, peer):
            first = asyncio.ensure_future(client.read_frame())
            await waiting(first)
            with pytest.raises(RuntimeError):
                await client.read_exactly(1)
            peer.write_frame(b"hi")
            assert await first == b"hi"

    aio.run(main())


def test_write_limit_and_blocked_drain(aio):
    async def main():
        async with server_pair(client_kw={"write_limit": 8 * 1024 * 1024}) as (client, peer):
            peer.transport.pause_reading()  # a peer that never reads
            block = b"z" * 65536
            paused = False
            for _ in range(2000):  # bounded: fill the socket buffers until the transport pauses
                client.write(block)
                if client._protocol._write_paused:
                    paused = True
                    break
                await asyncio.sleep(0)
            assert paused
            drain = asyncio.ensure_future(client.drain())
            await waiting(drain)
            pending = client.transport.get_write_buffer_size()
            with pytest.raises(fsaio.WriteLimitExceeded) as info:
                client.write(b"q" * (8 * 1024 * 1024))
            assert isinstance(info.value, BufferError)
            assert (info.value.size, info.value.pending, info.value.limit) == (8 * 1024 * 1024, pending,
                                                                                8 * 1024 * 1024)
            assert client.transport.get_write_buffer_size() == pending
            with pytest.raises(fsaio.WriteLimitExceeded):
                client.writelines([b"a", b"b" * (8 * 1024 * 1024)])
            assert client.transport.get_write_buffer_size() == pending
            drain.cancel()
            peer.transport.resume_reading()

    aio.run(main())


def test_unix(aio, tmp_path):
    path = str(tmp_path / "s")

    async def main():
        async def echo(stream):
            async for frame in stream:
                stream.write_frame(frame[::-1])
            stream.close()

        server = await fsaio.start_unix_server(echo, path, framing=Varint())
        client = await fsaio.open_unix_connection(path, framing=Varint())
        client.write_frames([b"abc", b"xy"])
        got = [await client.read_frame(), await client.read_frame()]
        client.close()
        server.close()
        await server.wait_closed()
        return got

    assert aio.run(main()) == [b"cba", b"yx"]


def test_many_concurrent_streams_and_callbacks(aio):
    async def main():
        # The callbacks own their connections, as with asyncio's streams (and Server.wait_closed
        # waits for every open one since Python 3.12): the echo closes its stream, the plain
        # callback leaves its own for the test to close.
        async def echo(stream):
            frame = await stream.read_frame()
            stream.write_frame(frame)
            await stream.drain()
            stream.close()

        kept = []

        def plain(stream):
            stream.write_frame(b"plain")
            kept.append(stream)

        def bad(stream):
            raise ValueError("boom")

        server = await fsaio.start_server(echo, HOST, 0, framing=LengthPrefix(4))
        port = server.sockets[0].getsockname()[1]

        async def one(i):
            s = await fsaio.open_connection(HOST, port, framing=LengthPrefix(4))
            s.write_frame(b"%d" % i)
            r = await s.read_frame()
            s.close()
            return r

        got = await asyncio.gather(*(one(i) for i in range(200)))
        assert got == [b"%d" % i for i in range(200)]
        servers = []
        for cb in (plain, bad):
            srv = await fsaio.start_server(cb, HOST, 0, framing=LengthPrefix(4))
            servers.append(srv)
        p = await fsaio.open_connection(HOST, servers[0].sockets[0].getsockname()[1], framing=LengthPrefix(4))
        assert await p.read_frame() == b"plain"
        b = await fsaio.open_connection(HOST, servers[1].sockets[0].getsockname()[1], framing=LengthPrefix(4))
        with pytest.raises(EOFError):
            await b.read_frame()
        # the failing callback closed its connection only: the server still accepts
        b2 = await fsaio.open_connection(HOST, servers[1].sockets[0].getsockname()[1], framing=LengthPrefix(4))
        with pytest.raises(EOFError):
            await b2.read_frame()
        for s in (p, b, b2, *kept):
            s.close()
        for srv in (server, *servers):
            srv.close()
            await srv.wait_closed()

    aio.run(main())
    assert [str(c["exception"]) for c in aio.errors] == ["boom", "boom"]
