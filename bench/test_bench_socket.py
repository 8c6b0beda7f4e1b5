"""pytest-benchmark: fastsock's socket methods against their standard-library equivalents.

    python -m pytest bench/test_bench_socket.py --benchmark-only
    python -m pytest bench/test_bench_socket.py --benchmark-only --benchmark-group-by=param:size

Each benchmark is one call moving `size` bytes; the far end is another process. Compare
fastsock-c, fastsock-python and stdlib rows within one group (same size and transport).
"""

from __future__ import annotations

import socket as stdsocket

import pytest
from conftest import backend

SIZES = [64, 4096, 65536, 1 << 20]
IMPLS = ["stdlib", "fastsock-c", "fastsock-python"]


def _as(impl: str, sock: stdsocket.socket):
    return sock if impl == "stdlib" else backend(impl.split("-")[1]).wrap(sock)


def stdlib_recv_exactly(sock: stdsocket.socket, n: int) -> bytes:
    """The HOWTO's loop: recv until n bytes, then join."""
    chunks = []
    got = 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def stdlib_recv_into_exactly(sock: stdsocket.socket, view: memoryview) -> int:
    """The careful loop: recv_into a preallocated buffer through memoryview slices."""
    got = 0
    n = len(view)
    while got < n:
        r = sock.recv_into(view[got:])
        if not r:
            raise EOFError
        got += r
    return n


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", SIZES)
def test_sendall(benchmark, drained, impl, size):
    sock = _as(impl, drained)
    data = b"s" * size
    benchmark.group = f"sendall {size}B"
    benchmark(sock.sendall, data)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", SIZES)
def test_recv_exactly(benchmark, fed, impl, size):
    sock = _as(impl, fed)
    benchmark.group = f"recv_exactly {size}B"
    if impl == "stdlib":
        result = benchmark(stdlib_recv_exactly, sock, size)
    else:
        result = benchmark(sock.recv_exactly, size)
    assert len(result) == size


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", SIZES)
def test_recv_into_exactly(benchmark, fed, impl, size):
    sock = _as(impl, fed)
    view = memoryview(bytearray(size))
    benchmark.group = f"recv_into_exactly {size}B"
    if impl == "stdlib":
        benchmark(stdlib_recv_into_exactly, sock, view)
    else:
        benchmark(sock.recv_into_exactly, view)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", SIZES)
def test_sendall_many_64_buffers(benchmark, drained, impl, size):
    """64 buffers of `size` bytes: fastsock gathers them; the stdlib joins then sends."""
    sock = _as(impl, drained)
    buffers = [bytes([i]) * size for i in range(64)]
    benchmark.group = f"sendall_many 64x{size}B"
    if impl == "stdlib":
        benchmark(lambda: sock.sendall(b"".join(buffers)))
    else:
        benchmark(sock.sendall_many, buffers)


W1_CHUNK = 256 * 1024
W1_ROUND = 64 * 1024 * 1024  # bytes received per benchmark round


@pytest.mark.parametrize("impl", IMPLS)
def test_w1_bulk_receive(benchmark, impl):
    """W1 (bulk) receiver side over loopback TCP: 64 MiB per round read in 256 KiB
    `recv_into_exactly` calls (fastsock) or the stdlib recv_into + memoryview loop, while a
    sender process on the other core writes 256 KiB chunks as fast as it can."""
    from conftest import connected, reap, spawn

    ours, theirs = connected("tcp")
    pid = spawn("feed", theirs, chunk=W1_CHUNK)
    theirs.close()
    try:
        sock = _as(impl, ours)
        view = memoryview(bytearray(W1_CHUNK))
        receive = (lambda: stdlib_recv_into_exactly(sock, view)) if impl == "stdlib" else \
            (lambda: sock.recv_into_exactly(view))

        def one_round():
            for _ in range(W1_ROUND // W1_CHUNK):
                receive()

        benchmark.group = "W1 bulk receive, 64 MiB per round"
        benchmark.pedantic(one_round, rounds=7, warmup_rounds=1)
        benchmark.extra_info["GB/s (median)"] = round(W1_ROUND / benchmark.stats.stats.median / 1e9, 3)
    finally:
        ours.close()
        reap(pid)
