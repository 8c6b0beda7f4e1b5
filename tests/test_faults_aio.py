"""fastsock.aio.Stream and FramedProtocol through the fault proxy, both backends and both
loops (the `aio` fixture): frames are identical under any segmentation; truncation raises
IncompleteReadError (Stream) or calls frame_error(IncompleteReadError) (FramedProtocol)
with the exact partial; a reset raises ConnectionResetError with the cut frame still
buffered (Stream) or reports the cut frame, then the loss (FramedProtocol); a stalled peer
makes asyncio.timeout / wait_for fire and every byte received before stays readable."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from collections.abc import AsyncIterator
from typing import Any, Optional

import aioutil
import pytest
from aioutil import HOST, until
from faultproxy import Fault, FaultProxy, Faults
from test_faults_stream import FRAMINGS, SPLITS, cut_error, encode, matrix, payloads_for

import fastsock
from fastsock import IncompleteReadError
from fastsock import aio as fsaio

pytestmark = pytest.mark.timeout(30)

aio = aioutil.aio  # the backend x loop fixture

_BY_NAME = dict(FRAMINGS)
#: Every framing with random segments; three of them one byte per send too.
SEGMENTATIONS = [(name, "random") for name, _ in matrix(FRAMINGS)] + [
    (name, "1-byte") for name in ("LengthPrefix(4,big)", "Delimiter(END!)", "RESP")]
PROTOCOL_SEGMENTATIONS = [
    *[(name, "random") for name in ("LengthPrefix(4,big)", "Delimiter(\\r\\n)", "Netstring", "RESP")],
    ("LengthPrefix(2,little)", "1-byte"),
]


def framing_of(name: str) -> Any:
    return _BY_NAME[name](fastsock)


@contextlib.asynccontextmanager
async def proxied(plan: Faults, framing: Any = None) -> AsyncIterator[tuple[Any, Any, FaultProxy]]:
    """(client, peer, proxy): fastsock.aio Streams of one connection, the client's through
    the proxy; all closed afterwards."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[Any] = loop.create_future()

    def on_connect(stream: Any) -> None:
        if not accepted.done():
            accepted.set_result(stream)

    server = await fsaio.start_server(on_connect, HOST, 0, framing=framing)
    proxy = FaultProxy(server.sockets[0].getsockname(), plan)
    client = peer = None
    try:
        client = await fsaio.open_connection(*proxy.address, framing=framing)
        peer = await accepted
        yield client, peer, proxy
    finally:
        for s in (client, peer):
            if s is not None:
                s.close()
        server.close()
        await server.wait_closed()
        proxy.close()


async def echo(stream: Any) -> None:
    """Echo every frame, then half-close."""
    async for frame in stream:
        stream.write_frame(frame)
        await stream.drain()
    stream.write_eof()


# ---- fastsock.aio.Stream -------------------------------------------------------------------


@pytest.mark.parametrize("name,split", SEGMENTATIONS, ids=[f"{n}-{s}" for n, s in SEGMENTATIONS])
def test_stream_frames_identical_under_any_segmentation(aio, name, split):
    framing = framing_of(name)
    rng = random.Random(f"aio/{name}/{split}")
    one_byte = split == "1-byte"
    payloads = payloads_for(name, rng, 10 if one_byte else 30, 80 if one_byte else 700)
    wire = sum(len(encode(framing, p)) for p in payloads)
    plan = Faults(up=Fault(split=SPLITS[split], seed=40), down=Fault(split=SPLITS[split], seed=41))

    async def main() -> tuple[list[Any], FaultProxy]:
        async with proxied(plan, framing) as (client, peer, proxy):
            echoing = asyncio.ensure_future(echo(peer))
            client.write_frames(payloads)
            await client.drain()
            client.write_eof()
            got = [await client.read_frame()]
            while len(got) < len(payloads):
                got += await client.read_frames(len(payloads) - len(got))
            with pytest.raises(EOFError):
                await client.read_frame()
            await echoing
            return got, proxy

    got, proxy = aio.run(main())
    assert got == payloads
    for flow in proxy.links[0].flows():
        assert flow.forwarded == flow.received == wire and flow.balanced(), flow
        if one_byte:
            assert flow.sends == wire


def test_stream_byte_reads_under_one_byte_segments(aio):
    data = b"line one\nline two\r\nabc--defXYZ" + bytes(range(256)) * 4

    async def main() -> None:
        async with proxied(Faults(down=Fault(split=1))) as (client, peer, proxy):
            peer.write(data)
            peer.write_eof()
            assert await client.readline() == b"line one\n"
            assert await client.read_until((b"\r\n", b"\n")) == b"line two\r\n"
            assert await client.read_until(b"--", keep=False) == b"abc"
            assert await client.read_exactly(3) == b"def"
            buf = bytearray(3)
            assert await client.read_exactly_into(buf) == 3 and buf == b"XYZ"
            assert await client.read() == bytes(range(256)) * 4
            assert client.at_eof()

    aio.run(main())


_CUTS = [("LengthPrefix(4,big)", "header"), ("LengthPrefix(4,big)", "payload"), ("Netstring", "header"),
         ("Netstring", "payload"), ("Delimiter(\\r\\n)", "payload"), ("FixedLength(7)", "payload")]


def _cut_wire(name: str, where: str) -> tuple[Any, list[bytes], bytes, int]:
    framing = framing_of(name)
    payloads = [b"alpha-0", b"bravo-1", b"charlie", b"delta-3"]  # 7 bytes each: FixedLength(7) too
    frames = [encode(framing, p) for p in payloads]
    start = len(frames[0]) + len(frames[1])
    cut = start + (2 if where == "header" else len(frames[2]) - 3)
    return framing, payloads, b"".join(frames), cut


@pytest.mark.parametrize("name,where", _CUTS, ids=[f"{n}-{w}" for n, w in _CUTS])
def test_stream_truncation_raises_incomplete_read_with_the_exact_partial(aio, name, where):
    framing, payloads, wire, cut = _cut_wire(name, where)
    before, partial, expected = cut_error(name, framing, payloads, cut)

    async def main() -> None:
        plan = Faults(down=Fault(split=(1, 4), truncate_after=cut, seed=42))
        async with proxied(plan, framing) as (client, peer, proxy):
            peer.write(wire)
            assert [await client.read_frame() for _ in range(before)] == payloads[:before]
            with pytest.raises(IncompleteReadError) as info:
                await client.read_frame()
            assert (info.value.partial, info.value.expected) == (partial, expected)
            with pytest.raises(EOFError):  # the cut frame was consumed by the error
                await client.read_frame()
            assert client.at_eof()

    aio.run(main())


def test_stream_truncated_read_exactly_carries_what_came(aio):
    data = bytes(random.Random("aio-exact").randrange(256) for _ in range(3000))

    async def main() -> IncompleteReadError:
        plan = Faults(down=Fault(split=(1, 50), truncate_after=1234, seed=43))
        async with proxied(plan) as (client, peer, proxy):
            peer.write(data)
            with pytest.raises(IncompleteReadError) as info:
                await client.read_exactly(2000)
            return info.value

    error = aio.run(main())
    assert error.partial == data[:1234] and error.expected == 2000


def test_stream_reset_raises_connection_reset_and_keeps_the_cut_frame(aio):
    framing, payloads, wire, cut = _cut_wire("LengthPrefix(4,big)", "payload")
    before, partial, _ = cut_error("LengthPrefix(4,big)", framing, payloads, cut)

    async def main() -> None:
        plan = Faults(down=Fault(split=(1, 4), reset_after=cut, seed=44))
        async with proxied(plan, framing) as (client, peer, proxy):
            peer.write(wire)
            assert [await client.read_frame() for _ in range(before)] == payloads[:before]
            with pytest.raises(ConnectionResetError):
                await client.read_frame()
            assert client.buffered == len(partial) and client.peek() == partial
            with pytest.raises(ConnectionResetError):  # the error stays; so do the bytes
                await client.read_frames()
            assert client.peek() == partial
            with pytest.raises(ConnectionResetError):
                await client.drain()
            assert proxy.links[0].down.forwarded == cut and proxy.links[0].reset_sent

    aio.run(main())


def _deadline_kinds() -> list[Any]:
    kinds: list[Any] = ["wait_for"]
    if sys.version_info >= (3, 11):
        kinds.append("asyncio.timeout")
    else:
        kinds.append(pytest.param("asyncio.timeout", marks=pytest.mark.skip(
            reason="asyncio.timeout() is new in Python 3.11 (wait_for covers the deadline here)")))
    return kinds


async def _within(kind: str, seconds: float, coro: Any) -> Any:
    if kind == "wait_for":
        return await asyncio.wait_for(coro, seconds)
    async with asyncio.timeout(seconds):  # type: ignore[attr-defined]
        return await coro


@pytest.mark.parametrize("kind", _deadline_kinds())
@pytest.mark.parametrize("read", ["read_frame", "read_exactly"])
def test_stream_stalled_peer_times_out_and_every_byte_stays_readable(aio, read, kind):
    framing = fastsock.LengthPrefix(4)
    payloads = [b"first", b"second" * 50, b"third"]
    wire = b"".join(encode(framing, p) for p in payloads)
    cut = 4 + 5 + 4 + 100

    async def main() -> None:
        plan = Faults(down=Fault(split=(1, 9), stall_after=cut, seed=45))
        async with proxied(plan, framing) as (client, peer, proxy):
            peer.write(wire)
            assert await client.read_frame() == b"first"
            await until(lambda: client.buffered == cut - 9, "the bytes before the stall")
            call = {"read_frame": client.read_frame, "read_exactly": lambda: client.read_exactly(4 + 300)}[read]
            with pytest.raises(asyncio.TimeoutError):
                await _within(kind, 0.1, call())
            assert client.buffered == cut - 9 and client.peek() == wire[9:cut]
            with pytest.raises(asyncio.TimeoutError):  # still stalled: nothing lost
                await _within(kind, 0.05, call())
            assert client.buffered == cut - 9
            proxy.release(0, "down")
            if read == "read_exactly":
                assert await client.read_exactly(4 + 300) == wire[9:9 + 304]
                assert await client.read_frame() == b"third"
            else:
                got = [await client.read_frame() for _ in payloads[1:]]
                assert got == payloads[1:]

    aio.run(main())


def test_stream_slow_peer_deadline_for_the_whole_read(aio):
    # One byte every 10 ms: only a deadline for the whole read_exactly() can fire.
    data = bytes(range(256)) * 12

    async def main() -> None:
        async with proxied(Faults(down=Fault(split=1, delay=0.01))) as (client, peer, proxy):
            peer.write(data)
            await until(lambda: client.buffered >= 3, "the first bytes")  # so the deadline has some to keep
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.read_exactly(len(data)), 0.15)
            assert 0 < client.buffered < len(data)
            assert client.peek() == data[:client.buffered]
            proxy.release(0, "down")
            assert await client.read_exactly(len(data)) == data

    aio.run(main())


# ---- fastsock.aio.FramedProtocol -------------------------------------------------------------


class Echo(fsaio.FramedProtocol):
    """Echoes every read's frames with one send_frames(); records what happened."""

    def __init__(self, framing: Any, reply: bool = True) -> None:
        super().__init__(framing)
        self.reply = reply
        self.frames: list[Any] = []
        self.errors: list[Exception] = []
        self.lost: asyncio.Future[Optional[BaseException]] = asyncio.get_running_loop().create_future()

    def frames_received(self, frames: list[Any]) -> None:
        self.frames += frames
        if self.reply:
            self.send_frames(frames)

    def frame_error(self, exc: Exception) -> None:
        self.errors.append(exc)
        super().frame_error(exc)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        super().connection_lost(exc)
        self.lost.set_result(exc)


@contextlib.asynccontextmanager
async def proxied_protocol(plan: Faults, framing: Any,
                           reply: bool = True) -> AsyncIterator[tuple[Any, Echo, FaultProxy]]:
    """(client Stream, the server's Echo protocol, proxy)."""
    loop = asyncio.get_running_loop()
    made: asyncio.Future[Echo] = loop.create_future()

    def factory() -> Echo:
        proto = Echo(framing, reply)
        made.set_result(proto)
        return proto

    server = await loop.create_server(factory, HOST, 0)
    proxy = FaultProxy(server.sockets[0].getsockname(), plan)
    client = None
    try:
        client = await fsaio.open_connection(*proxy.address, framing=framing)
        yield client, await made, proxy
    finally:
        if client is not None:
            client.close()
        server.close()
        await server.wait_closed()
        proxy.close()


@pytest.mark.parametrize("name,split", PROTOCOL_SEGMENTATIONS, ids=[f"{n}-{s}" for n, s in PROTOCOL_SEGMENTATIONS])
def test_framed_protocol_frames_identical_under_any_segmentation(aio, name, split):
    framing = framing_of(name)
    rng = random.Random(f"proto/{name}/{split}")
    payloads = payloads_for(name, rng, 10 if split == "1-byte" else 30, 80 if split == "1-byte" else 700)
    plan = Faults(up=Fault(split=SPLITS[split], seed=46), down=Fault(split=SPLITS[split], seed=47))

    async def main() -> tuple[list[Any], Echo]:
        async with proxied_protocol(plan, framing) as (client, proto, proxy):
            client.write_frames(payloads)
            await client.drain()
            client.write_eof()
            got: list[Any] = []
            while len(got) < len(payloads):
                got += await client.read_frames()
            assert await client.read_frames() == []  # the protocol closed at the EOF
            assert await proto.lost is None
            return got, proto

    got, proto = aio.run(main())
    assert got == payloads and proto.frames == payloads and proto.errors == []


@pytest.mark.parametrize("fault", ["truncate", "reset"])
def test_framed_protocol_cut_request_reports_the_exact_partial(aio, fault):
    # A truncation is an EOF inside a frame; a reset is a loss with no EOF first: either way
    # frame_error gets IncompleteReadError with the cut frame's bytes, after the frames before.
    # (No replies before a reset: one written into it could end the connection before every
    # byte that came before the reset was read, and make the outcome depend on timing.)
    framing = fastsock.LengthPrefix(4)
    payloads = [b"alpha", b"bravo", b"charlie-0123456789", b"delta"]
    frames = [encode(framing, p) for p in payloads]
    cut = len(frames[0]) + len(frames[1]) + 9
    partial = frames[2][:9]
    ending = {"truncate_after": cut} if fault == "truncate" else {"reset_after": cut}

    async def main() -> tuple[Echo, Optional[BaseException], list[Any]]:
        plan = Faults(up=Fault(split=(1, 3), seed=48, **ending))
        async with proxied_protocol(plan, framing, reply=fault == "truncate") as (client, proto, proxy):
            client.write(b"".join(frames))
            lost = await proto.lost
            replies: list[Any] = []
            if fault == "truncate":
                while len(replies) < 2:
                    replies += await client.read_frames()
                assert await client.read_frames() == []
            else:
                with pytest.raises(ConnectionResetError):
                    await client.read_frames()
            return proto, lost, replies

    proto, lost, replies = aio.run(main())
    assert proto.frames == payloads[:2]
    assert len(proto.errors) == 1 and isinstance(proto.errors[0], IncompleteReadError)
    assert (proto.errors[0].partial, proto.errors[0].expected) == (partial, len(frames[2]))
    if fault == "truncate":
        assert lost is None and replies == payloads[:2]
    else:
        assert isinstance(lost, ConnectionResetError)
