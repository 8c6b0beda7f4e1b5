"""A framed RPC service on fastsock.Server: one request per LengthPrefix(4) frame, one reply
per request, a tiny command set, many clients on one event loop.

    PING            -> PONG
    ECHO <text>     -> <text>
    ADD <a> <b> ... -> the sum
    UPPER <text>    -> <TEXT>
    STATS           -> the server's counters
    QUIT            -> BYE, then the server closes this connection

Run: python examples/framed_rpc_server.py            (self-test: a server thread, clients, exit)
     python examples/framed_rpc_server.py 127.0.0.1 9000   (serve until Ctrl-C or SIGTERM)
"""

import json
import sys
import threading

import fastsock
from fastsock import LengthPrefix

FRAMING = LengthPrefix(4, max_size=64 * 1024)  # a request above 64 KiB closes its connection


def handle(conn, request: bytes):
    """Called once per complete frame, on the loop's thread; the return value is the reply."""
    command, _, arg = request.partition(b" ")
    if command == b"PING":
        return b"PONG"
    if command == b"ECHO":
        return arg
    if command == b"ADD":
        return str(sum(int(x) for x in arg.split())).encode()   # a bad number: logged, closed
    if command == b"UPPER":
        return arg.upper()
    if command == b"STATS":
        stats = conn.server.stats()
        return json.dumps({k: stats[k] for k in ("connections", "frames_in", "frames_out")}).encode()
    if command == b"QUIT":
        conn.send(b"BYE")       # queued; close() flushes it first
        conn.close()
        return None
    return b"ERR unknown command " + command


def make_server() -> fastsock.Server:
    return fastsock.Server(handle, framing=FRAMING, idle_timeout=60, frame_timeout=10)


def client(address, n: int, results: list) -> None:
    with fastsock.connect(address, framing=FRAMING, timeout=5) as stream:
        requests = [b"PING", b"ECHO client %d" % n, b"ADD %d 2 3" % n, b"UPPER shout", b"NOPE", b"QUIT"]
        stream.write_frames(requests)           # pipelined: all sent at once
        stream.flush()
        replies = [stream.read_frame() for _ in requests]
        assert stream.read_frames() == []       # then EOF: the server closed after BYE
        results.append(replies)


def self_test() -> None:
    server = make_server()
    address = server.listen(("127.0.0.1", 0))
    loop = threading.Thread(target=server.serve_forever)
    loop.start()
    try:
        results: list = []
        clients = [threading.Thread(target=client, args=(address, n, results)) for n in range(8)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(30)
        assert len(results) == 8, results
        for replies in results:
            n = int(replies[1].split()[-1])
            assert replies == [b"PONG", b"client %d" % n, b"%d" % (n + 5), b"SHOUT",
                               b"ERR unknown command NOPE", b"BYE"], replies
        print(sorted(results, key=lambda r: int(r[1].split()[-1]))[0])
        with fastsock.connect(address, framing=FRAMING, timeout=5) as stream:
            stream.write_frame(b"STATS")
            stream.flush()
            print("server stats:", stream.read_frame().decode())
    finally:
        server.stop(grace=2)
        loop.join(10)
        server.close()
    print("rpc self-test passed: 8 clients, 48 requests, one event loop")


if __name__ == "__main__":
    if len(sys.argv) == 3:
        # SIGINT / SIGTERM stop it gracefully: every request received is answered first
        fastsock.serve(handle, (sys.argv[1], int(sys.argv[2])), framing=FRAMING, idle_timeout=60, frame_timeout=10)
    else:
        self_test()
