"""The three-line change from asyncio's streams to fastsock.aio: a framed echo server and its
clients on the event loop you already use (uvloop when installed, else asyncio's own).

With asyncio's streams, a length-prefixed protocol is parsed by hand on a reader/writer pair:

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(len(payload).to_bytes(4, "big") + payload)
    frame = await reader.readexactly(int.from_bytes(await reader.readexactly(4), "big"))

With fastsock.aio, the framing is a keyword and one Stream reads and writes (framed in C):

    stream = await fastsock.aio.open_connection("127.0.0.1", port, framing=FRAMING)
    stream.write_frame(payload)
    frame = await stream.read_frame()

Run: python examples/aio_echo.py [asyncio]   (`asyncio` forces the default loop; exits after its check)
"""

import asyncio
import faulthandler
import sys

import fastsock
import fastsock.aio

FRAMING = fastsock.LengthPrefix(4)
CLIENTS = 10
MESSAGES = 200                   # per client, pipelined
TIMEOUT = 10                     # seconds: the whole run, so that it can never hang


async def handle(stream: fastsock.aio.Stream) -> None:
    """Called with one Stream per connection, plain or async (was: `async def handle(reader, writer)`)."""
    async for frame in stream:                   # every frame until the client's clean EOF
        stream.write_frames([frame.upper()])     # framed in C, one writelines() per call
        await stream.drain()                     # waits while the client is not reading
    stream.close()
    await stream.wait_closed()


async def client(port: int, n: int) -> int:
    # was: reader, writer = await asyncio.open_connection("127.0.0.1", port)
    stream = await fastsock.aio.open_connection("127.0.0.1", port, framing=FRAMING)
    try:
        messages = [b"client %d says hello %d" % (n, i) for i in range(MESSAGES)]
        stream.write_frames(messages)            # the whole batch, one writelines()
        await stream.drain()
        stream.write_eof()                       # no more requests; the replies still come
        first = await stream.read_frame()        # was: n = await reader.readexactly(4); ...
        replies = [first] + [frame async for frame in stream]   # the rest, until the server closes
        assert replies == [m.upper() for m in messages], (n, len(replies))
        return len(replies)
    finally:
        stream.close()
        await stream.wait_closed()


async def main() -> None:
    # was: server = await asyncio.start_server(handle, "127.0.0.1", 0)
    server = await fastsock.aio.start_server(handle, "127.0.0.1", 0, framing=FRAMING)
    async with server:                           # closed at the end, whatever happens
        port = server.sockets[0].getsockname()[1]
        echoed = await asyncio.gather(*(client(port, n) for n in range(CLIENTS)))
    print(f"{CLIENTS} clients, {sum(echoed)} frames echoed")


def run(coro_fn) -> None:
    """Run coro_fn() on uvloop when it is installed (unless argv says `asyncio`), else on
    asyncio's default loop. Past TIMEOUT seconds, whatever hangs, the process prints every
    thread's traceback and exits (status 1)."""
    faulthandler.dump_traceback_later(TIMEOUT, exit=True)
    uvloop = None
    if "asyncio" not in sys.argv[1:]:
        try:
            import uvloop
        except ImportError:
            pass
    print(f"event loop: {'asyncio' if uvloop is None else 'uvloop'}, fastsock backend: {fastsock.BACKEND}")
    if uvloop is None:
        asyncio.run(coro_fn())
    else:
        uvloop.run(coro_fn())                    # uvloop >= 0.18
    faulthandler.cancel_dump_traceback_later()


if __name__ == "__main__":
    run(main)
