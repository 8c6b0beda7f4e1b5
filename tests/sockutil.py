"""Helpers for socket tests: connected pairs of every transport, and bounded peer threads."""

from __future__ import annotations

import os
import socket as stdsocket
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

try:
    import tracemalloc

    tracemalloc.is_tracing()
except ImportError:  # PyPy ships tracemalloc.py but no _tracemalloc
    tracemalloc = None  # type: ignore[assignment]

def examples(n: int) -> int:
    """A property test's example count: n, or a sixth of it under HYPOTHESIS_PROFILE=ci-fast
    (CI's runs on the other interpreters; the full counts run on the main one)."""
    return max(5, n // 6) if os.environ.get("HYPOTHESIS_PROFILE") == "ci-fast" else n


#: A raising signal handler loses nothing, on either backend. The tests that show it raise
#: from a handler at random moments, and both they and the pure backend rely on where CPython
#: 3.11+ runs pending handlers: at calls, function entry and loop back edges, never between two
#: plain statements. CPython 3.9 and PyPy may run one between any two bytecodes, and in CI the
#: tests' own bookkeeping broke on 3.10 too (its eval loop checks at more points), so the
#: tests run on 3.11+.
needs_cpython_signal_points = pytest.mark.skipif(
    sys.implementation.name != "cpython" or sys.version_info < (3, 11),
    reason="raising-signal-handler tests need CPython 3.11+, which runs signal handlers only at "
    "calls, function entry and loop back edges (3.9, 3.10 and PyPy may run one at points where "
    "neither the test's bookkeeping nor the pure backend can keep the promise)",
)


def require_signal_points() -> None:
    """Skip (with the reason above) a raising-signal-handler test on an interpreter where
    its bookkeeping, and the pure backend's guarantee, cannot hold."""
    if needs_cpython_signal_points.args[0]:
        pytest.skip(needs_cpython_signal_points.kwargs["reason"])


def pure_only(config: pytest.Config) -> bool:
    """True when the run tests the pure backend alone (--no-c-extensions or --backend python)."""
    return bool(config.getoption("--no-c-extensions")) or config.getoption("--backend") == "python"


#: Allocation bounds are measured with tracemalloc, which only CPython has; on PyPy the same
#: rules are checked through the buffers' capacities (tests/test_stream_memory.py).
needs_tracemalloc = pytest.mark.skipif(tracemalloc is None, reason="tracemalloc is CPython-only (PyPy has no "
                                       "_tracemalloc): this allocation bound is checked on CPython")

TRANSPORTS = ["unix", "tcp4", "tcp6"]


def has_ipv6_loopback() -> bool:
    """True when ::1 can be bound on this host."""
    if not stdsocket.has_ipv6:
        return False
    try:
        with stdsocket.socket(stdsocket.AF_INET6, stdsocket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def make_pair(impl: ModuleType, transport: str) -> tuple[Any, Any]:
    """A connected (a, b) pair of `impl.socket`s over AF_UNIX, TCP/IPv4 or TCP/IPv6 loopback."""
    if transport == "unix":
        return impl.socketpair()
    host = "127.0.0.1" if transport == "tcp4" else "::1"
    family = stdsocket.AF_INET if transport == "tcp4" else stdsocket.AF_INET6
    with impl.create_server((host, 0), family=family) as server:
        a = impl.create_connection(server.getsockname()[:2], timeout=10)
        a.settimeout(None)
        b, _ = server.accept()
    b.settimeout(None)
    return a, b


def small_buffers(*socks: stdsocket.socket, size: int = 16384) -> None:
    """Shrink kernel buffers so that large transfers are split into many partial writes
    (TCP_NODELAY too, so tiny TCP windows do not stall on delayed ACKs)."""
    for s in socks:
        if s.family != stdsocket.AF_UNIX:
            s.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_NODELAY, 1)
        s.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_SNDBUF, size)
        s.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, size)


class Peer(threading.Thread):
    """Runs `fn()` in a daemon thread; join() re-raises its exception in the test."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self, timeout: float | None = 30) -> Any:  # type: ignore[override]
        super().join(timeout)
        if self.is_alive():
            raise AssertionError("peer thread did not finish in time")
        if self.error is not None:
            raise self.error
        return self.result


def recv_all(sock: stdsocket.socket, n: int, chunk: int = 65536) -> bytes:
    """Plain stdlib reader: exactly n bytes (or fewer at EOF)."""
    parts = []
    got = 0
    while got < n:
        data = stdsocket.socket.recv(sock, min(chunk, n - got))
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def subprocess_env(pure: str | None = None) -> dict[str, str]:
    """Environment for a child interpreter that imports the same fastsock as these tests
    (installed or in-place build, never a source tree in its working directory), with
    FASTSOCK_PURE set to `pure` (or unset)."""
    import os

    import fastsock

    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTSOCK_")}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(fastsock.__file__)))
    if pure is not None:
        env["FASTSOCK_PURE"] = pure
    return env
