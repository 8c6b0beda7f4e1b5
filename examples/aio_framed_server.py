"""A fastsock.aio.FramedProtocol server: the transport receives straight into the decoder, every
complete request of one read arrives in one frames_received() call, and the replies leave in
one send_frames() (one transport.writelines()). While the client does not read its replies
(the transport says pause_writing), the server stops reading its requests.

    ADD <a> <b> ...  -> the sum
    UPPER <text>     -> <TEXT>
    anything else    -> ERR unknown command

The client pipelines its requests on a fastsock.aio.Stream (a sending and a receiving
coroutine, so neither side waits for the other) and checks every reply; the first client is
a slow reader, whose replies back up until the server pauses.

Run: python examples/aio_framed_server.py [asyncio]   (uvloop when installed; exits after its check)
"""

import asyncio
import faulthandler
import sys

import fastsock
import fastsock.aio

FRAMING = fastsock.LengthPrefix(4, max_size=64 * 1024)   # a larger request closes its connection
CLIENTS = 8
REQUESTS = 3000                  # per client
BATCH = 500                      # requests per write_frames() on the client
BIG, BIG_EVERY = 32 * 1024, 20   # every 20th request of the slow reader: 32 KiB, and its reply
TIMEOUT = 10                     # seconds: the whole run, so that it can never hang


def answer(request: bytes) -> bytes:
    """The reply to one request."""
    command, _, arg = request.partition(b" ")
    if command == b"ADD":
        try:
            return b"%d" % sum(int(x) for x in arg.split())
        except ValueError:
            return b"ERR not a number"
    if command == b"UPPER":
        return arg.upper()
    return b"ERR unknown command"


class Stats:
    """The server's counters, shared by its connections."""

    reads = requests = pauses = 0


class Calc(fastsock.aio.FramedProtocol):
    """One connection of the server: requests in, replies out, in frames."""

    framing = FRAMING            # or FramedProtocol.__init__(framing=...)

    def __init__(self, stats: Stats) -> None:
        super().__init__()
        self.stats = stats

    def frames_received(self, frames: list) -> None:
        """Every complete request of one read: one reply each, all in one writelines()."""
        self.stats.reads += 1
        self.stats.requests += len(frames)
        self.send_frames([answer(frame) for frame in frames])

    def pause_writing(self) -> None:
        """The client is not reading its replies: stop reading its requests (a coroutine
        would await drain(); a protocol's callbacks cannot wait, so they stop the input).
        No reply is larger than its request, so one read queues at most about what it read."""
        super().pause_writing()
        self.stats.pauses += 1
        self.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.resume_reading()


async def client(port: int, n: int) -> int:
    stream = await fastsock.aio.open_connection("127.0.0.1", port, framing=FRAMING)
    requests = [b"ADD %d %d" % (n, i) if i % 3 else b"UPPER request %d" % i for i in range(REQUESTS)]
    if n == 0:                                   # the slow reader sends large requests too
        requests[::BIG_EVERY] = [b"UPPER " + b"x" * BIG] * len(requests[::BIG_EVERY])
    requests += [b"ADD 1 two", b"NOPE"]
    expected = [answer(r) for r in requests]

    async def send() -> None:
        for start in range(0, len(requests), BATCH):
            stream.write_frames(requests[start:start + BATCH])   # pipelined: no reply awaited
            await stream.drain()
        stream.write_eof()                       # done; the server closes after its replies

    async def receive() -> list:
        if n == 0:
            await asyncio.sleep(0.2)             # a slow reader: the server's replies back up
        replies = []
        while True:
            frames = await stream.read_frames()  # every reply received so far; [] at EOF
            if not frames:
                return replies
            replies.extend(frames)

    try:
        _, replies = await asyncio.gather(send(), receive())
    finally:
        stream.close()
        await stream.wait_closed()
    assert replies == expected, (n, len(replies), len(expected))
    return len(replies)


async def main() -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    server = await loop.create_server(lambda: Calc(stats), "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        answered = await asyncio.gather(*(client(port, n) for n in range(CLIENTS)))
    print(f"server: {stats.requests} requests in {stats.reads} reads, "
          f"reading paused {stats.pauses} times for a client's replies")
    assert stats.requests == sum(answered)
    print(f"{CLIENTS} clients, {sum(answered)} pipelined requests answered")


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
