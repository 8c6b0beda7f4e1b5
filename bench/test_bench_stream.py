"""Stream benchmarks: W3 (pipelined frames) and W2 (same-core ping-pong) of
shared/WORKLOADS.md, fastsock.Stream on both backends beside the stdlib baselines.

    python -m pytest bench/test_bench_stream.py --benchmark-only --benchmark-columns=median,rounds

W3: a sender process (pinned to CPU 1) writes FASTSOCK_BENCH_FRAMES pre-built frames
(100-byte payload, 4-byte big-endian length prefix) over loopback TCP in 1 MiB sendall
calls; the measured server (this process, pinned to CPU 0) parses and counts them.
frames/s = frames / median. W2: a server process and this client, both pinned to CPU 0,
echo FASTSOCK_BENCH_ROUNDS framed 64-byte payloads; extra_info has the server's CPU time
per round trip.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import socket
import struct
import sys
import time
from typing import Any, Callable

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import stream_servers as servers

N_FRAMES = int(os.environ.get("FASTSOCK_BENCH_FRAMES", "500000"))
ROUNDS = int(os.environ.get("FASTSOCK_BENCH_ROUNDS", "20000"))
PAYLOAD = 100
CTX = multiprocessing.get_context("fork")
C = importlib.import_module("fastsock._c._speedups")
PY = importlib.import_module("fastsock._py")

try:
    import uvloop  # noqa: F401
    HAVE_UVLOOP = True
except ImportError:
    HAVE_UVLOOP = False


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu in range(os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


_WIRE: list[bytes] = []


def _wire() -> bytes:
    if not _WIRE:
        frame = struct.pack(">I", PAYLOAD) + bytes(range(PAYLOAD))
        _WIRE.append(frame * N_FRAMES)
    return _WIRE[0]


def _sender(port: int, wire: bytes) -> None:
    _pin(1)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.recv(1)  # the server says go: timing starts at the first byte
        view = memoryview(wire)
        for pos in range(0, len(view), 1 << 20):
            s.sendall(view[pos:pos + (1 << 20)])
        s.recv(1)  # until the server closes


class W3:
    """One W3 round per setup(): a fresh connection and sender process."""

    def __init__(self) -> None:
        self.proc: Any = None
        self.conn: Any = None

    def cleanup(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.proc is not None:
            self.proc.join(10)
            self.proc = None

    def setup(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        self.cleanup()
        wire = _wire()
        with socket.create_server(("127.0.0.1", 0)) as server:
            self.proc = CTX.Process(target=_sender, args=(server.getsockname()[1], wire), daemon=True)
            self.proc.start()
            conn, _ = server.accept()
        self.conn = conn
        return (conn,), {}


W3_SERVERS: dict[str, Callable[[socket.socket, int], tuple[int, int]]] = {
    "fastsock-c read_frames": lambda s, n: servers.w3_stream_read_frames(C, s, n),
    "fastsock-c read_frame": lambda s, n: servers.w3_stream_read_frame(C, s, n),
    "fastsock-python read_frames": lambda s, n: servers.w3_stream_read_frames(PY, s, n),
    "fastsock-python read_frame": lambda s, n: servers.w3_stream_read_frame(PY, s, n),
    "stdlib best": servers.w3_stdlib_best,
    "stdlib makefile": servers.w3_makefile,
    "stdlib naive": servers.w3_stdlib_naive,
    "asyncio Protocol": servers.w3_asyncio_protocol,
}
if HAVE_UVLOOP:
    W3_SERVERS["uvloop Protocol"] = lambda s, n: servers.w3_asyncio_protocol(s, n, use_uvloop=True)


@pytest.fixture
def pinned() -> Any:
    old = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    _pin(0)
    yield
    if old is not None:
        os.sched_setaffinity(0, old)


@pytest.mark.parametrize("name", list(W3_SERVERS))
def test_w3_pipelined_frames(benchmark: Any, pinned: Any, name: str) -> None:
    parse = W3_SERVERS[name]
    w3 = W3()
    n = N_FRAMES

    def run(conn: socket.socket) -> tuple[int, int]:
        conn.sendall(b"g")
        return parse(conn, n)

    try:
        result = benchmark.pedantic(run, setup=w3.setup, rounds=5, iterations=1)
    finally:
        w3.cleanup()
    assert result == (n, n * PAYLOAD)
    median = benchmark.stats.stats.median
    benchmark.extra_info["frames_per_s"] = round(n / median)
    benchmark.extra_info["workload"] = f"W3 {n} frames of {PAYLOAD} B"


def _w2_server(port: int, which: str, rounds: int, report: Any) -> None:
    _pin(0)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            start = time.process_time()  # CLOCK_PROCESS_CPUTIME_ID: user + system, ns resolution
            if which == "stdlib":
                servers.w2_stdlib_server(s, rounds)
            else:
                servers.w2_stream_server(C if which == "fastsock-c" else PY, s, rounds)
            report.send(time.process_time() - start)
            if s.recv(1, socket.MSG_PEEK) == b"":
                return


@pytest.mark.parametrize("which", ["fastsock-c", "fastsock-python", "stdlib"])
def test_w2_ping_pong_same_core(benchmark: Any, pinned: Any, which: str) -> None:
    rounds = ROUNDS
    with socket.create_server(("127.0.0.1", 0)) as server:
        mine, theirs = CTX.Pipe()
        proc = CTX.Process(target=_w2_server, args=(server.getsockname()[1], which, rounds, theirs), daemon=True)
        proc.start()
        conn, _ = server.accept()
    cpu: list[float] = []
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        servers.w2_client(conn, rounds)  # warm-up round (W2: 1,000+ round trips first)
        cpu.append(mine.recv())

        def run() -> None:
            servers.w2_client(conn, rounds)
            cpu.append(mine.recv())

        benchmark.pedantic(run, rounds=3, iterations=1)
    finally:
        conn.close()
        proc.join(10)
    measured = sorted(cpu[1:])
    median = benchmark.stats.stats.median
    benchmark.extra_info["round_trips_per_s"] = round(rounds / median)
    benchmark.extra_info["server_cpu_us_per_rt"] = round(measured[len(measured) // 2] / rounds * 1e6, 2)
