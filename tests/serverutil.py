"""Helpers for the Server tests: a server running in a thread, framed clients, bounded waits,
and child processes that are always killed and reaped.

Every socket operation of these helpers has a timeout, every wait is bounded, servers
listen on 127.0.0.1 (or an AF_UNIX path in a temporary directory) only.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket as stdsocket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any, Callable, Optional

from sockutil import subprocess_env

LOCAL = ("127.0.0.1", 0)
#: Generous bound for anything a test waits for (the machine is shared and slow).
WAIT = 30.0
_LEN = struct.Struct(">I")




def frame(payload: bytes) -> bytes:
    """payload with a 4-byte big-endian length prefix (LengthPrefix(4))."""
    return _LEN.pack(len(payload)) + payload


def frames(*payloads: bytes) -> bytes:
    return b"".join(frame(p) for p in payloads)


def recv_exact(sock: stdsocket.socket, n: int) -> bytes:
    """Exactly n bytes (the socket's timeout bounds each recv); EOFError at EOF."""
    parts = []
    got = 0
    while got < n:
        data = sock.recv(n - got)
        if not data:
            raise EOFError(f"EOF after {got} of {n} bytes")
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def read_frame(sock: stdsocket.socket) -> bytes:
    """One LengthPrefix(4) frame."""
    (size,) = _LEN.unpack(recv_exact(sock, 4))
    return recv_exact(sock, size)


def read_frames(sock: stdsocket.socket, count: int) -> list[bytes]:
    return [read_frame(sock) for _ in range(count)]


def connect(address: Any, timeout: float = WAIT) -> stdsocket.socket:
    """A stdlib client socket connected to `address` (TCP tuple or AF_UNIX path)."""
    if isinstance(address, (str, bytes)):
        sock = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address)
        return sock
    return stdsocket.create_connection(address[:2], timeout=timeout)


def wait_until(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """Poll `predicate` every 10 ms until it returns something true (AssertionError after
    `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def is_eof(sock: stdsocket.socket, timeout: float = WAIT) -> bool:
    """True when the peer closed (EOF or reset) within `timeout`; bytes before it are read."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (TimeoutError, stdsocket.timeout):
        return False


class Running:
    """A Server serving in a daemon thread. `stop()` stops it and joins the thread (bounded);
    the context manager stops (if needed) and closes it, failing the test if the loop did
    not end or raised."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="test-server")
        self.thread.start()
        wait_until(lambda: server.stats()["running"] or self.error is not None, what="the server to run")
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            self.server.serve_forever()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self, grace: float = 5.0, timeout: float = WAIT) -> None:
        self.server.stop(grace)
        self.join(timeout)

    def join(self, timeout: float = WAIT) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError("serve_forever() did not return in time")
        if self.error is not None:
            raise self.error

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self.thread.is_alive():
                self.stop(grace=0.5)
            elif self.error is not None and exc_info[0] is None:
                raise self.error
        finally:
            if not self.thread.is_alive():
                self.server.close()


@contextlib.contextmanager
def serving(impl: ModuleType, handler: Callable[..., Any], address: Any = LOCAL,
            **options: Any) -> Iterator[tuple[Any, Any]]:
    """(server, address) for impl.Server(handler, **options) listening on `address` and
    serving in a thread for the duration of the block."""
    server = impl.Server(handler, **options)
    try:
        addr = server.listen(address)
    except BaseException:
        server.close()
        raise
    with Running(server):
        yield server, addr


def echo(conn: Any, frame: bytes) -> bytes:
    return frame


class Recorder:
    """Thread-safe hook recorder: on_connect / on_close calls, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connected: list[Any] = []
        self.closed: list[tuple[Any, Optional[BaseException]]] = []

    def on_connect(self, conn: Any) -> None:
        with self.lock:
            self.connected.append(conn)

    def on_close(self, conn: Any, exc: Optional[BaseException]) -> None:
        with self.lock:
            self.closed.append((conn, exc))

    def closes(self) -> list[tuple[Any, Optional[BaseException]]]:
        with self.lock:
            return list(self.closed)


# ---- child processes -------------------------------------------------------------------


class Child:
    """A Python child process running `code` (a script) in its own session, with the backend
    of `impl`; stdout is read line by line. Always killed (the whole process group, so its
    workers too) and reaped on exit from the block."""

    def __init__(self, impl: ModuleType, code: str, *args: str) -> None:
        env = subprocess_env("1" if impl.__name__ == "fastsock._py" else "0")
        env["PYTHONUNBUFFERED"] = "1"
        # cwd: `python -c` puts its working directory first on sys.path, where a source tree
        # would shadow the fastsock under test.
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True, cwd=tempfile.gettempdir())
        self._lines: list[str] = []
        self._err: list[str] = []
        self._cond = threading.Condition()
        self._readers = [threading.Thread(target=self._pump, args=(self.proc.stdout, self._lines), daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self._err), daemon=True)]
        for t in self._readers:
            t.start()

    def _pump(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._cond:
                into.append(line.rstrip("\n"))
                self._cond.notify_all()

    def line(self, prefix: str, timeout: float = WAIT) -> str:
        """The first stdout line starting with `prefix` (waits for it, bounded)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines:
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not any(t.is_alive() for t in self._readers)):
                    raise AssertionError(f"no line starting with {prefix!r} from the child; stdout={self._lines!r} "
                                         f"stderr={self.stderr()!r}")
                self._cond.wait(min(left, 0.1))

    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self._err)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = WAIT) -> int:
        """The exit status (AssertionError if it does not exit in time)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the child did not exit in {timeout} s; stderr={self.stderr()!r}") from None
        for t in self._readers:
            t.join(5)
        return code

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.kill()


def pid_gone(pid: int) -> bool:
    """True once `pid` no longer exists (reaped), or is a zombie nobody reaps yet whose
    every thread has exited. (A killed process's main thread shows as a zombie while its
    other threads still exit and hold its descriptors: a listener among them still takes
    connections, and resets them when the last thread closes it.)"""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        for task in tasks:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                if f.read().split(")")[-1].split()[0] not in ("Z", "X"):
                    return False
        return True
    except FileNotFoundError:
        return True
    except OSError:  # pragma: no cover
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


class Clients:
    """Many non-blocking client sockets driven from the test thread with a selector: send
    scheduled pieces, collect every reply, all within a deadline."""

    def __init__(self, address: Any, count: int) -> None:
        self.socks: list[stdsocket.socket] = []
        self.sel = selectors.DefaultSelector()
        try:
            for i in range(count):
                s = connect(address)
                s.setblocking(False)
                self.socks.append(s)
                self.sel.register(s, selectors.EVENT_READ, i)
        except BaseException:
            self.close()
            raise
        self.received = [bytearray() for _ in range(count)]
        self.eof = [False] * count

    def pump(self, timeout: float) -> None:
        """Read whatever is ready (waiting up to `timeout` for the first event)."""
        for key, _ in self.sel.select(timeout):
            i = key.data
            try:
                data = self.socks[i].recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof[i] = True
                self.sel.unregister(self.socks[i])
            else:
                self.received[i] += data

    def send_all(self, i: int, data: bytes, deadline: float) -> None:
        """sendall on a non-blocking socket, reading replies meanwhile (never deadlocks)."""
        view = memoryview(data)
        while view:
            try:
                n = self.socks[i].send(view)
                view = view[n:]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError("could not send in time") from None
                self.pump(0.01)

    def close(self) -> None:
        self.sel.close()
        for s in self.socks:
            s.close()
