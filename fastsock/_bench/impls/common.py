"""Helpers shared by the servers: the measurement window, fastsock checks, event loops."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any, Callable, Optional


class Meter:
    """Wall time and this process's CPU (user+sys, all threads) between start() and stop()."""

    def __init__(self) -> None:
        self.t0 = self.c0 = 0.0
        self.seconds = self.cpu = 0.0
        self.started = False

    def start(self) -> None:
        self.started = True
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0


def recvn(conn: socket.socket, n: int) -> bytes:
    """The stdlib-naive servers' read: the HOWTO's loop: recv until n bytes (b'' at EOF before the first byte)."""
    chunks = []
    got = 0
    while got < n:
        chunk = conn.recv(n - got)
        if not chunk:
            if got == 0:
                return b""
            raise EOFError("connection closed mid-frame")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def nodelay(sock: Any) -> None:
    """TCP_NODELAY, as every request/response server should set."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def missing_fastsock(*names: str, socket_methods: tuple[str, ...] = ()) -> Optional[str]:
    """None when fastsock has every name (and socket method) needed, else the reason."""
    try:
        import fastsock
    except ImportError as exc:  # pragma: no cover - fastsock is the package we live in
        return f"fastsock does not import ({exc})"
    if os.environ.get("FASTSOCK_PURE", "") in ("", "0") and fastsock.BACKEND != "c":
        return "the compiled backend is not built (pip install . with a C compiler)"
    absent = [n for n in names if not hasattr(fastsock, n)]
    sock_cls = getattr(fastsock, "socket", None)
    absent += [f"socket.{m}" for m in socket_methods if not hasattr(sock_cls, m)]
    if absent:
        return f"fastsock {fastsock.BACKEND} backend lacks {', '.join(absent)} (not in this fastsock build)"
    return None


def missing_server() -> Optional[str]:
    """Why fastsock.Server cannot run in this interpreter (and backend), or None."""
    try:
        import fastsock
    except ImportError as exc:  # pragma: no cover - fastsock is the package we live in
        return f"fastsock does not import ({exc})"
    if not hasattr(fastsock, "Server"):
        return "fastsock.Server is not built yet"
    return missing_fastsock("Server", "LengthPrefix")


def missing_module(name: str) -> Optional[str]:
    """None when `name` imports, else 'not installed'."""
    try:
        __import__(name)
    except ImportError:
        return f"{name} not installed (pip install {name})"
    return None


def fastsock_api() -> Any:
    """The fastsock module, typed loosely: features land on main one by one."""
    import fastsock

    return fastsock


def as_fastsock(conn: socket.socket) -> Any:
    """A fastsock socket for an accepted stdlib socket (keeps the same file descriptor)."""
    fastsock = fastsock_api()
    if isinstance(conn, fastsock.socket):
        return conn
    family, type_, proto = conn.family, conn.type, conn.proto
    return fastsock.socket(family, type_, proto, fileno=conn.detach())


def accept_fastsock(listener: socket.socket) -> Any:
    """Accept one connection and return it as a fastsock socket."""
    conn, _ = listener.accept()
    return as_fastsock(conn)


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """An event loop: 'asyncio' (default selector), 'uvloop', or 'fastsock' (fastsock.Selector)."""
    if kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    if kind == "fastsock":
        return asyncio.SelectorEventLoop(fastsock_api().Selector())
    return asyncio.new_event_loop()


def run_loop(kind: str, main: Callable[[], Any]) -> Any:
    """Run the coroutine function `main` to completion on a new loop of `kind`."""
    loop = new_loop(kind)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main())
    finally:
        loop.close()


def loop_missing(kind: str) -> Optional[str]:
    """Why the loop `kind` is unavailable, or None."""
    if kind == "uvloop":
        return missing_module("uvloop")
    if kind == "fastsock":
        return missing_fastsock("Selector")
    return None
