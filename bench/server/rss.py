"""Server RSS per idle connection: `python bench/server/rss.py [--conns 10000] [--kinds fastsock,...]`.

Starts a W5 server (bench/server/servers.py), reads its VmRSS, opens --conns client
connections from this process, makes each of them do one request/reply round trip (so
every connection has been read, answered and gone idle, as a served client does), waits,
reads VmRSS again: (after - before) / conns. Both processes need RLIMIT_NOFILE above
--conns (the script raises its own soft limit; the server raises its own too, see below).
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUEST = struct.pack(">I", 64) + b"r" * 64


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def measure(kind: str, count: int) -> float:
    env = dict(os.environ, BENCH_CPU="0")
    env.pop("FASTSOCK_PURE", None)
    if kind == "fastsock-pure":
        env["FASTSOCK_PURE"] = "1"
    # the server raises its own descriptor limit before it starts serving
    code = ("import resource, runpy, sys; s, h = resource.getrlimit(resource.RLIMIT_NOFILE); "
            f"resource.setrlimit(resource.RLIMIT_NOFILE, (min({count + 512}, h), h)); "
            f"sys.argv = ['servers.py', 'w5', {kind!r}]; runpy.run_path({str(HERE / 'servers.py')!r}, "
            "run_name='__main__')")
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        port = int(server.stdout.readline().split()[1])
        # warm the server's code paths with one connection, then take the baseline
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(REQUEST)
            c.recv(1024)
        time.sleep(0.5)
        before = rss_kib(server.pid)
        socks = []
        sel = selectors.DefaultSelector()
        for i in range(count):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
            if i % 500 == 499:
                time.sleep(0.05)  # let the backlog drain
        for s in socks:
            sel.register(s, selectors.EVENT_WRITE)
        pending = set(socks)
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:  # connected: send one request each
            for key, _ in sel.select(1.0):
                s = key.fileobj
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    raise RuntimeError("a connection failed")
                s.send(REQUEST)
                sel.modify(s, selectors.EVENT_READ)
                pending.discard(s)
        waiting = set(socks)
        while waiting and time.monotonic() < deadline:  # every reply back
            for key, _ in sel.select(1.0):
                s = key.fileobj
                if len(s.recv(4096)) == 0:
                    raise RuntimeError("the server closed a connection")
                sel.unregister(s)
                waiting.discard(s)
        if pending or waiting:
            raise RuntimeError(f"{len(pending)} not connected, {len(waiting)} not answered")
        time.sleep(1.0)
        after = rss_kib(server.pid)
        for s in socks:
            s.close()
        return (after - before) * 1024 / count
    finally:
        server.kill()
        server.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--kinds", default="fastsock")
    args = ap.parse_args()
    raise_nofile(args.conns + 512)
    for kind in args.kinds.split(","):
        print(f"{kind:18s} {measure(kind, args.conns):8.0f} bytes of server RSS per idle connection "
              f"({args.conns} connections, one round trip each)")


if __name__ == "__main__":
    main()
