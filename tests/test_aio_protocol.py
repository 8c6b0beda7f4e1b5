"""fastsock.aio.FramedProtocol on loop.create_server/create_connection, both backends and loops."""

from __future__ import annotations

import asyncio

import aioutil
import pytest
from aioutil import HOST

from fastsock import FrameTooLarge, IncompleteReadError, LengthPrefix
from fastsock import aio as fsaio

aio = aioutil.aio  # the backend x loop fixture


class Recorder(fsaio.FramedProtocol):
    framing = LengthPrefix(4, max_size=1000)

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = []
        self.errors = []
        self.lost = asyncio.get_running_loop().create_future()

    def frames_received(self, frames):
        self.calls.append(list(frames))

    def frame_error(self, exc):
        self.errors.append(exc)
        super().frame_error(exc)

    def connection_lost(self, exc):
        super().connection_lost(exc)
        self.lost.set_result(exc)


class Counting:
    """A transport wrapper counting writelines() calls."""

    def __init__(self, transport):
        self._t = transport
        self.writelines_calls = 0

    def writelines(self, buffers):
        self.writelines_calls += 1
        self._t.writelines(buffers)

    def __getattr__(self, name):
        return getattr(self._t, name)


async def pair(server_factory=Recorder):
    loop = asyncio.get_running_loop()
    made = loop.create_future()

    def factory():
        proto = server_factory()
        made.set_result(proto)
        return proto

    server = await loop.create_server(factory, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    _, client = await loop.create_connection(Recorder, HOST, port)
    return server, client, await made


def test_frames_and_sends(aio):
    async def main():
        server, client, proto = await pair()
        client.transport = Counting(client.transport)
        client.send_frames([b"a", b"bb", b"ccc"])
        client.send_frame(b"d")
        assert client.transport.writelines_calls == 2
        for _ in range(500):
            if sum(map(len, proto.calls)) == 4:
                break
            await asyncio.sleep(0.002)
        assert [f for call in proto.calls for f in call] == [b"a", b"bb", b"ccc", b"d"]
        assert all(isinstance(call, list) and call for call in proto.calls)
        await client.drain()
        proto.pause_reading()
        proto.resume_reading()
        client.transport.close()
        await proto.lost
        with pytest.raises(ConnectionResetError):
            await client.drain()
        server.close()
        await server.wait_closed()

    aio.run(main())


def test_frame_received_default_path(aio):
    got = []

    class One(fsaio.FramedProtocol):
        framing = LengthPrefix(4)

        def frame_received(self, frame):
            got.append(frame)

    async def main():
        server, client, proto = await pair(One)
        client.send_frames([b"x", b"y"])
        for _ in range(500):
            if len(got) == 2:
                break
            await asyncio.sleep(0.002)
        client.transport.close()
        server.close()
        await server.wait_closed()

    aio.run(main())
    assert got == [b"x", b"y"]


@pytest.mark.parametrize("tail,error", [(b"\x00\x10\x00\x00", FrameTooLarge),
                                        (b"\x00\x00\x00\x09abc", IncompleteReadError)])
def test_bad_input_delivers_earlier_frames_then_closes(aio, tail, error):
    async def main():
        server, client, proto = await pair()
        client.transport.write(b"\x00\x00\x00\x02ok" + tail)
        client.transport.write_eof()
        await proto.lost
        server.close()
        await server.wait_closed()
        return proto

    proto = aio.run(main())
    assert [f for call in proto.calls for f in call] == [b"ok"]
    assert [type(e) for e in proto.errors] == [error]


def test_write_limit(aio):
    async def main():
        server, client, proto = await pair()
        client._write_limit = 100
        pending = client.transport.get_write_buffer_size()
        with pytest.raises(fsaio.WriteLimitExceeded) as info:
            client.send_frames([b"x" * 60, b"y" * 60])
        assert info.value.limit == 100 and info.value.size == 128
        assert client.transport.get_write_buffer_size() == pending
        client.transport.close()
        server.close()
        await server.wait_closed()

    aio.run(main())
