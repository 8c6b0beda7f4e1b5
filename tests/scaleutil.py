"""Scale and hostile-client scenarios for fastsock.Server, shared by tests/test_server_scale.py
(which asserts counts and bounds) and bench/server_scale.py (which prints the figures): the
server, the client helpers and `run()`; the drivers are in scale_scenarios.py.

A scenario runs in processes of its own, so that what is measured is theirs alone:
- the server, `python scale_scenarios.py serve OPTIONS`: a fastsock.Server (the backend
  FASTSOCK_PURE selects) on 127.0.0.1:0 serving a small RPC (`_handle`); it prints its port;
- the driver, `python scale_scenarios.py SCENARIO PARAMS`: one thread, one epoll, up to
  thousands of non-blocking stdlib sockets; it reads the server's VmRSS and descriptors from
  /proc and ends with one `RESULT {json}` line;
- for slowloris, the prober: a well-behaved client alone in its process, so that its latency
  is the server's and not the busy driver's loop.
`run()` starts them (RLIMIT_NOFILE raised to what each needs, never past the hard limit) and
always kills and reaps them. Every loop is bounded in count and in time. Linux only (/proc,
epoll). This module imports no pytest: the benchmark script uses it too.
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import os
import resource
import socket
import struct
import sys
import time
from typing import Any, Optional

from fastsock._bench import procs

HOST = "127.0.0.1"
#: The LengthPrefix(4) header.
HEADER = struct.Struct(">I")
#: Descriptors a process needs beyond its connections (listener, epoll, pipes, control, ...).
FD_MARGIN = 256
#: The Server's timer granularity: the compiled loop rounds its epoll wait up to whole
#: milliseconds (never waking early), and the pure one waits through selectors, which does too.
TICK = 0.001
#: Connections opened ahead of the server's accept() (its backlog is 4096 here).
CONNECT_WINDOW = 512


def frame(payload: bytes) -> bytes:
    """payload with a 4-byte big-endian length prefix (LengthPrefix(4))."""
    return HEADER.pack(len(payload)) + payload


def percentile(values: Any, q: float) -> float:
    """The q-th percentile (nearest rank) of `values`; NaN when there are none."""
    data = sorted(values)
    if not data:
        return float("nan")
    return data[min(len(data) - 1, max(0, math.ceil(q / 100.0 * len(data)) - 1))]


def rss(pid: int) -> int:
    """VmRSS of `pid` in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def fds(pid: int) -> int:
    """Descriptors open in `pid`."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_shortfall(need: int) -> Optional[str]:
    """Why this machine cannot give a process `need` descriptors (the hard RLIMIT_NOFILE), or None."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < need:
        return f"the hard RLIMIT_NOFILE is {hard}, and this scenario needs {need} descriptors in one process"
    return None


# ---- the server ---------------------------------------------------------------------------


def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def _proc_figures(do_gc: bool) -> dict[str, int]:
    """This process's RSS and descriptors; with `do_gc`, after a collection, the count of
    GC-tracked objects, and the RSS once the C allocator has given back the free memory it
    keeps (malloc_trim: what is left is memory in use, not the heap's free space)."""
    figures = {"rss": rss(os.getpid()), "fds": fds(os.getpid())}
    if do_gc:
        gc.collect()
        objects = gc.get_objects()
        figures["objects"] = len(objects)
        figures["conn_objects"] = sum(type(o).__name__ == "Connection" and type(o).__module__.startswith("fastsock")
                                      for o in objects)
        del objects
        if _TRIM is not None:
            _TRIM(0)
        figures["rss_trimmed"] = rss(os.getpid())
    return figures


_CONNS: set[Any] = set()


def _handle(conn: Any, request: Any) -> bytes:
    """The server's RPC: `!stats` (`!stats gc`: after a collection) -> JSON of stats(), of
    this process and the largest output queue (`pending_max`); `!fill N` -> N bytes; anything
    else is echoed."""
    if request[:1] == b"!":
        words = bytes(request).split()
        if words[0] == b"!stats":
            figures = dict(conn.server.stats(), **_proc_figures(b"gc" in words[1:]))
            figures["pending_max"] = max((c.pending for c in _CONNS), default=0)
            return json.dumps(figures).encode()
        if words[0] == b"!fill":
            return b"f" * int(words[1])
    return request


def serve(options: dict[str, Any]) -> None:
    """The server child: options as for Server(), max_size for LengthPrefix(4)."""
    import fastsock

    framing = fastsock.LengthPrefix(4, max_size=options.pop("max_size", None))
    server = fastsock.Server(_handle, framing=framing, on_connect=_CONNS.add, on_close=lambda c, exc: _CONNS.discard(c),
                             **options)
    port = server.listen((HOST, 0))[1]
    print("PORT", port, fastsock.BACKEND, os.getpid(), flush=True)
    server.serve_forever()


# ---- driver helpers -----------------------------------------------------------------------


class Control:
    """A blocking connection to the server's `!stats` RPC."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.received = 0

    def stats(self, do_gc: bool = False) -> dict[str, Any]:
        """The server's stats() and process figures; their bytes_out counts every reply this
        connection received before this one (`self.received` bytes)."""
        self.sock.sendall(frame(b"!stats gc" if do_gc else b"!stats"))
        (size,) = HEADER.unpack(_recv_exact(self.sock, 4))
        st = json.loads(_recv_exact(self.sock, size))
        st["control_received"] = self.received
        self.received += 4 + size
        return st  # type: ignore[no-any-return]

    def wait(self, what: str, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
        """stats() once `predicate(stats)` holds (polled every 20 ms, RuntimeError after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout} s waiting for {what}; stats={st}")
            time.sleep(0.02)

    def close(self) -> None:
        self.sock.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        data = sock.recv(n - got)
        if not data:
            raise EOFError(f"EOF after {got} of {n} bytes")
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def open_many(port: int, count: int, ctl: Control, rcvbuf: Optional[int] = None) -> list[socket.socket]:
    """`count` connected non-blocking client sockets, opened at most CONNECT_WINDOW ahead of the
    server's accept() (a full accept queue drops SYNs, and a dropped SYN waits 1 s)."""
    socks: list[socket.socket] = []
    try:
        start = ctl.stats()["accepted"]
        deadline = time.monotonic() + 60
        while len(socks) < count:
            accepted = ctl.stats()["accepted"] - start
            room = min(count - len(socks), accepted + CONNECT_WINDOW - len(socks))
            if room <= 0:
                time.sleep(0.005)
            for _ in range(room):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                if rcvbuf is not None:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                s.settimeout(30)
                s.connect((HOST, port))
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.setblocking(False)
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(socks)} of {count} connections opened in 60 s")
        ctl.wait(f"{count} connections accepted", lambda st: st["accepted"] - start >= count, 60)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets an RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def settled_rss(pid: int, timeout: float = 2.0) -> int:
    """The server's RSS once two readings 100 ms apart agree within 64 KiB (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    last = rss(pid)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = rss(pid)
        if abs(now - last) <= 65536:
            return now
        last = now
    return last


class Caller:
    """A well-behaved client on a blocking socket: one request, its whole reply, checked."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sent = self.answered = self.wrong = self.received = 0
        self.latencies: list[float] = []

    def call(self, request: bytes, expected: bytes) -> bool:
        self.sent += 1
        t = time.monotonic()
        try:
            self.sock.sendall(frame(request))
            (size,) = HEADER.unpack(_recv_exact(self.sock, 4))
            reply = _recv_exact(self.sock, size)
        except (OSError, EOFError):
            return False
        self.latencies.append(time.monotonic() - t)
        self.answered += 1
        self.received += 4 + size
        if reply != expected:
            self.wrong += 1
            return False
        return True

    def result(self) -> dict[str, Any]:
        return {"sent": self.sent, "answered": self.answered, "wrong": self.wrong,
                "p50_ms": percentile(self.latencies, 50) * 1e3, "p99_ms": percentile(self.latencies, 99) * 1e3}

    def restart(self) -> dict[str, Any]:
        """result(), then the counts and latencies start again from zero."""
        result = self.result()
        self.sent = self.answered = self.wrong = 0
        self.latencies = []
        return result

    def close(self) -> None:
        self.sock.close()


# ---- running a scenario -------------------------------------------------------------------

#: How each kind of offending connection ends: "wait" (the server must close it: EOF seen),
#: "eof" (shutdown(SHUT_WR), then the server must close it), "reset" (SO_LINGER 0: an RST).
KINDS = {
    "random-bytes": "wait",
    "header-4GiB": "wait",
    "header-max_size+1": "wait",
    "frames-then-bad-header": "wait",
    "truncated-header": "eof",
    "truncated-payload": "eof",
    "reset-mid-header": "reset",
    "reset-mid-payload": "reset",
    "reset-replies-queued": "reset",
}

#: Each scenario's server options and the descriptors its processes need.
SERVERS: dict[str, dict[str, Any]] = {
    "tenk": {"backlog": 4096},
    "slowloris": {"backlog": 4096, "frame_timeout": 2.0},
    # the documented bound of a non-reader: max_buffer + high_water + one reply
    "nonreading": {"max_size": 65536, "high_water": 256 * 1024},
    # frame_timeout: random bytes whose header happens to be small leave a frame begun
    "malformed": {"max_size": 1 << 20, "frame_timeout": 1.0},
}


def nonreading_bound(max_size: int = 65536, high_water: int = 256 * 1024, reply: int = 65536,
                     read_size: int = 65536) -> int:
    """What the README promises a client that never reads costs the server at most:
    max_buffer (framed: max_size + 64 KiB by default) + high_water + one (framed) reply, the
    output queue's capacity rounded up to max(read_size, high_water / 16)."""
    return (max_size + 64 * 1024) + high_water + (reply + 4) + max(read_size, high_water // 16)


def needs_nofile(scenario: str, params: dict[str, Any]) -> int:
    conns = {"tenk": params.get("conns", 10_000), "slowloris": params.get("conns", 1000),
             "nonreading": params.get("conns", 100),
             "malformed": params.get("per_kind", 20) * len(KINDS)}[scenario]
    return conns + FD_MARGIN


def child_env(backend: str) -> dict[str, str]:
    """The environment of a child importing the same fastsock as this process, on `backend`."""
    import fastsock

    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTSOCK_")}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(fastsock.__file__)))
    env["FASTSOCK_PURE"] = "1" if backend == "python" else "0"
    return env


def run(scenario: str, backend: str, timeout: float = 120.0, pin: bool = False,
        server: Optional[dict[str, Any]] = None, **params: Any) -> dict[str, Any]:
    """Run `scenario` ("tenk", "slowloris", "nonreading", "malformed") against a server on
    `backend` ("c" or "python") with SERVERS[scenario] (updated by `server`): the driver's
    result (`params` are its arguments), with the server's backend and whether it was still
    running at the end. `pin`: server on core 0, driver on core 1 (2+ cores)."""
    options = dict(SERVERS[scenario], **(server or {}))
    if scenario == "nonreading":
        params.setdefault("bound", nonreading_bound(options["max_size"], options["high_water"],
                                                    params.get("reply", 65536)))
    if scenario == "slowloris":
        options["frame_timeout"] = params.setdefault("frame_timeout", options["frame_timeout"])
    nofile = needs_nofile(scenario, params)
    cores = (0, 1) if pin and (os.cpu_count() or 1) >= 2 else (None, None)
    env = child_env(backend)
    deadline = time.monotonic() + timeout
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scale_scenarios.py")
    child = procs.Child("server", [sys.executable, here, "serve", json.dumps(options)], env=env,
                        core=cores[0], nofile=nofile)
    try:
        line = child.expect(("PORT",), time.monotonic() + 30)
        if line is None:
            raise RuntimeError(f"the server did not start: {child.stderr_tail()}")
        _, port, actual, pid = line.split()
        driver = procs.Child("driver", [sys.executable, here, scenario,
                                        json.dumps(dict(params, port=int(port), pid=int(pid)))],
                             env=env, core=cores[1], nofile=nofile)
        try:
            line = driver.expect(("RESULT",), deadline)
            if line is None:
                raise RuntimeError(f"no result from the {scenario} driver in {timeout} s: {driver.stderr_tail(2000)}")
        finally:
            driver.kill()
        result: dict[str, Any] = json.loads(line.split(" ", 1)[1])
        result["backend"] = actual
        result["server_running"] = child.running()
        result["server_stderr"] = child.stderr_tail(2000)
        return result
    finally:
        child.kill()
