"""asyncio on fastsock.Selector: asyncio.SelectorEventLoop(fastsock.Selector())."""

from __future__ import annotations

import asyncio
import signal
import socket

import pytest


@pytest.fixture
def loop(impl, method):
    """An event loop on fastsock.Selector, for each poll method (`method`: conftest.py)."""
    lp = asyncio.SelectorEventLoop(impl.Selector(method=method))
    yield lp
    lp.close()


async def _echo_streams(reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(line)
            await writer.drain()
    finally:
        writer.close()


@pytest.mark.timeout(60)
def test_streams_client_server(loop):
    async def main():
        server = await asyncio.start_server(_echo_streams, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        async def client(i):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            got = []
            for j in range(20):
                writer.write(b"client %d line %d\n" % (i, j))
                await writer.drain()
                got.append(await reader.readline())
            writer.close()
            await writer.wait_closed()
            return got

        results = await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(100))), 30)
        server.close()
        await server.wait_closed()
        return results

    results = loop.run_until_complete(main())
    assert results == [[b"client %d line %d\n" % (i, j) for j in range(20)] for i in range(100)]


class _EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


@pytest.mark.timeout(60)
def test_protocol_echo_large_transfer(loop):
    """Back-pressure: the transport's buffer fills, so asyncio registers for WRITE
    (Selector.modify) and unregisters again."""
    payload = bytes(range(256)) * 16384  # 4 MiB

    async def main():
        server = await loop.create_server(_EchoProtocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        got = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return got

    assert loop.run_until_complete(main()) == payload


@pytest.mark.timeout(30)
def test_sock_api_and_timers(loop):
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        try:
            loop.call_later(0.05, b.send, b"later")
            data = await asyncio.wait_for(loop.sock_recv(a, 100), 5)
            await asyncio.sleep(0.01)
            return data
        finally:
            a.close()
            b.close()

    assert loop.run_until_complete(main()) == b"later"


@pytest.mark.timeout(30)
def test_signal_handler_wakes_loop(loop):
    async def main():
        got = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, got.set)
        try:
            loop.call_later(0.05, signal.raise_signal, signal.SIGUSR1)
            await asyncio.wait_for(got.wait(), 5)
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)

    loop.run_until_complete(main())
