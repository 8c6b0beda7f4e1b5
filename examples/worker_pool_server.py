"""Slow work off the event loop: the handler hands each request to a ThreadPoolExecutor and
returns at once; the worker thread replies with conn.send(), which is thread-safe (the
loop applies it at its next turn, in call order). The loop keeps serving other clients
while the pool works.

Run: python examples/worker_pool_server.py   (self-test: server, pool and clients; then exits)
"""

import concurrent.futures
import hashlib
import threading
import time

import fastsock
from fastsock import LengthPrefix

FRAMING = LengthPrefix(4)


def slow_digest(data: bytes) -> bytes:
    """Stands for blocking work: a database call, a model, a file system walk..."""
    time.sleep(0.01)
    return hashlib.sha256(data).hexdigest().encode()


def make_server(pool: concurrent.futures.Executor) -> fastsock.Server:
    def handle(conn, request: bytes):
        if request == b"ping":
            return b"pong"                         # cheap requests are answered on the loop

        def work() -> None:
            try:
                conn.send(request[:8] + b" " + slow_digest(request))   # from the worker thread
            except BrokenPipeError:
                pass                               # the client left meanwhile

        pool.submit(work)
        return None                                # no reply now: the worker sends it

    return fastsock.Server(handle, framing=FRAMING)


def client(address, n: int, out: dict) -> None:
    with fastsock.connect(address, framing=FRAMING, timeout=10) as stream:
        requests = [b"req-%02d-%02d" % (n, i) for i in range(10)]
        stream.write_frames(requests)
        stream.write_frame(b"ping")
        stream.flush()
        replies = [stream.read_frame() for _ in range(11)]
        assert replies[0] == b"pong", replies[0]   # not stuck behind the slow ones
        expected = {r[:8] + b" " + hashlib.sha256(r).hexdigest().encode() for r in requests}
        assert set(replies[1:]) == expected
        out[n] = len(replies)


def main() -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        server = make_server(pool)
        address = server.listen(("127.0.0.1", 0))
        loop = threading.Thread(target=server.serve_forever)
        loop.start()
        try:
            done: dict = {}
            clients = [threading.Thread(target=client, args=(address, n, done)) for n in range(6)]
            for t in clients:
                t.start()
            for t in clients:
                t.join(30)
            assert sorted(done) == list(range(6)), done
        finally:
            server.stop(grace=2)
            loop.join(10)
            server.close()
    print(f"{sum(done.values())} replies, {sum(done.values()) - len(done)} of them from the pool")


if __name__ == "__main__":
    main()
