"""Shared benchmark fixtures: connected pairs whose far end is a separate process that
drains (for send benchmarks) or feeds (for recv benchmarks), so the measured side runs
alone in this interpreter. Children are pinned to another core where there is one and
are always reaped."""

from __future__ import annotations

import importlib
import os
import signal
import socket as stdsocket

import pytest

TRANSPORTS = ["socketpair", "tcp"]


def backend(name: str):
    return importlib.import_module("fastsock._c._speedups" if name == "c" else "fastsock._py")


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() >= 2:
        os.sched_setaffinity(0, {core % os.cpu_count()})


def connected(transport: str) -> tuple[stdsocket.socket, stdsocket.socket]:
    """(ours, theirs): plain stdlib sockets; benchmarks wrap `ours` as they need."""
    if transport == "socketpair":
        return stdsocket.socketpair()
    with stdsocket.create_server(("127.0.0.1", 0)) as server:
        ours = stdsocket.create_connection(server.getsockname())
        theirs, _ = server.accept()
    for s in (ours, theirs):
        s.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_NODELAY, 1)
    return ours, theirs


def spawn(role: str, sock: stdsocket.socket, chunk: int = 1 << 20) -> int:
    """Fork a child that drains `sock` ('drain') or writes to it forever ('feed') until the
    other end closes; returns its pid."""
    pid = os.fork()
    if pid == 0:  # child: only socket calls, then _exit
        try:
            _pin(1)
            buf = bytearray(chunk)
            payload = bytes(range(256)) * (chunk // 256)
            if role == "drain":
                if sock.family != stdsocket.AF_UNIX:
                    # TCP: MSG_TRUNC discards queued bytes without copying them out, so the
                    # drain never limits the sender being measured.
                    while sock.recv(chunk, stdsocket.MSG_TRUNC):
                        pass
                while sock.recv_into(buf):
                    pass
            else:
                while True:
                    sock.sendall(payload)
        except OSError:
            pass
        finally:
            os._exit(0)
    return pid


def reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


def _with_peer(transport: str, role: str):
    """Yield our end of a connection whose other end is a child process in `role`."""
    ours, theirs = connected(transport)
    pid = spawn(role, theirs)
    theirs.close()
    _pin(0)
    try:
        yield ours
    finally:
        ours.close()
        reap(pid)


@pytest.fixture(params=TRANSPORTS)
def drained(request):
    """A socket whose peer (another process) reads and discards everything."""
    yield from _with_peer(request.param, "drain")


@pytest.fixture(params=TRANSPORTS)
def fed(request):
    """A socket whose peer (another process) writes data as fast as it can."""
    yield from _with_peer(request.param, "feed")
