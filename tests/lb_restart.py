"""Restarting one process group behind HAProxy loses no request: the scenario, shared by
tests/test_lb_restart.py and by the README's figure (`python tests/lb_restart.py --backend c`).

HAProxy (TCP mode, health checks, redispatch) runs on 127.0.0.1 in front of two process
groups, A and B, each `fastsock.serve(..., workers=2)` in a child process. A client keeps
several connections busy with framed requests through HAProxy, each connection reconnecting
now and then (so a restarted group gets traffic back). Mid-run group A's supervisor gets
SIGTERM (a graceful stop), exits, and is started again on the same port; then everything
stops.

What each side records, and why it proves the claim:
- A request is 12 bytes (id, attempt); each worker appends every request its handler gets
  to a file named after its pid (one write per request, before the reply exists), and
  replies with the request and its pid. So a record (pid, id, attempt) means "this request
  reached a server"; it is *lost* unless the client got that very reply from that pid.
- The client cannot know whether a request that got no reply reached a server: on a
  connection-level error (EOF, reset, refused, broken pipe) it reconnects and sends it
  again with attempt + 1. Any other client error (a timeout, a reply it did not ask for)
  is a failure.

Everything binds to 127.0.0.1; every phase is bounded in time and the request count is
capped; HAProxy and both groups are killed (whole process group) and reaped on every path.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Optional

from serverutil import Child, frame, read_frame, wait_until
from tools import tool

REQUEST = struct.Struct(">QI")  # id, attempt
REPLY = struct.Struct(">QII")  # id, attempt, the answering worker's pid

#: One process group: FASTSOCK_PURE (set by Child from the backend) picks the backend.
GROUP = """
    import os, struct, sys
    import fastsock

    port, records = int(sys.argv[1]), sys.argv[2]
    PID = struct.Struct(">I")
    files = {}

    def handle(conn, request):
        if len(request) != 12:
            raise ValueError(f"a request is 12 bytes, not {len(request)}")
        pid = os.getpid()
        fd = files.get(pid)
        if fd is None:  # opened in the worker (forked after this module ran)
            fd = files[pid] = os.open(os.path.join(records, str(pid)), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, request)  # "it reached a server", recorded before the reply exists
        return request + PID.pack(pid)

    fastsock.serve(handle, ("127.0.0.1", port), framing=fastsock.LengthPrefix(4), workers=2)
"""

HAPROXY_CONFIG = """\
defaults
    mode tcp
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    timeout client-fin 2s
    timeout server-fin 2s
    retries 3
    option redispatch 1
frontend clients
    bind 127.0.0.1:{port}
    default_backend groups
backend groups
    balance roundrobin
    server a 127.0.0.1:{port_a} check inter 100ms fall 1 rise 1
    server b 127.0.0.1:{port_b} check inter 100ms fall 1 rise 1
"""

#: The client's errors a retry is right for: the connection broke (the request may or may
#: not have reached a server; the server-side records tell).
CONNECTION_ERRORS = (EOFError, ConnectionResetError, ConnectionRefusedError, ConnectionAbortedError,
                     BrokenPipeError)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_module(name: str) -> ModuleType:
    """The backend module for "c" or "python" (what tests/conftest.py's `impl` gives)."""
    return importlib.import_module("fastsock._c._speedups" if name == "c" else "fastsock._py")


def wait_listening(port: int, proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 30.0) -> None:
    """Until a TCP connect to 127.0.0.1:port succeeds (a group's supervisor only reserves
    its port: connections are refused until a worker listens); AssertionError if `proc`,
    which should listen there, exits first or the time runs out."""
    def accepts() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"exited with status {proc.returncode} before listening on port {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return True
        except OSError:
            return False
    wait_until(accepts, timeout=timeout, what=f"127.0.0.1:{port} to accept")


class Group:
    """One process group (`fastsock.serve(..., workers=2)`) on a fixed port; each start
    records into its own folder."""

    def __init__(self, impl: ModuleType, name: str, port: int, root: str) -> None:
        self.impl, self.name, self.port, self.root = impl, name, port, root
        self.child: Optional[Child] = None
        self.children: list[Child] = []
        self.starts = 0

    @property
    def records(self) -> str:
        return os.path.join(self.root, f"{self.name}{self.starts}")

    def start(self) -> None:
        self.starts += 1
        os.mkdir(self.records)
        self.child = Child(self.impl, GROUP, str(self.port), self.records)
        self.children.append(self.child)
        try:
            wait_listening(self.port, self.child.proc)
        except AssertionError as exc:
            raise AssertionError(f"group {self.name}: {exc}; its stderr: {self.child.stderr()}") from None

    def stop(self, whole_group: bool = False, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM to the supervisor, or to every process of the group at once (as systemd's
        default KillMode does): (the supervisor's exit status, seconds until it exited)."""
        assert self.child is not None
        began = time.monotonic()
        if whole_group:
            os.killpg(self.child.proc.pid, signal.SIGTERM)
        else:
            self.child.signal(signal.SIGTERM)
        code = self.child.wait(timeout)
        return code, time.monotonic() - began

    def kill(self) -> None:
        """Kill (whole process group) and reap every start of this group."""
        for child in self.children:
            child.kill()

    def stderr(self) -> str:
        """What the current start of the group wrote on stderr (its log: warnings and errors)."""
        return self.child.stderr() if self.child is not None else ""


class HAProxy:
    """haproxy -db (foreground) with its config and log in `root`; killed and reaped by
    close()."""

    def __init__(self, path: str, root: str, port: int, port_a: int, port_b: int) -> None:
        self.port = port
        self.config = os.path.join(root, "haproxy.cfg")
        with open(self.config, "w") as f:
            f.write(HAPROXY_CONFIG.format(port=port, port_a=port_a, port_b=port_b))
        self.log_path = os.path.join(root, "haproxy.log")
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([path, "-f", self.config, "-db"], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_listening(port, self.proc)
        except AssertionError as exc:
            self.close()
            raise AssertionError(f"haproxy {exc}; its output: {self.log()}") from None

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)


@dataclass
class ClientStats:
    """What one client connection did."""

    answered: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (attempt, pid)
    sent: int = 0  # ids issued
    transmissions: int = 0  # requests written, resends included
    resent: int = 0
    connects: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)  # connection-level
    failures: list[str] = field(default_factory=list)  # anything else
    unanswered: list[int] = field(default_factory=list)


class Client(threading.Thread):
    """One client connection's traffic through the balancer: `window` framed requests in
    flight, each written on its own, a new one as each reply arrives; a new connection
    every `rotate` requests (so a restarted group gets traffic back); on a connection-level
    error a new connection that sends the unanswered requests again. Ids are `index + k *
    stride`, so the connections' ids never collide. Takes no new id once `stopping` is set
    (or after `max_requests`) and ends when every id it issued is answered, or at
    `deadline` (what is left is reported unanswered)."""

    def __init__(self, port: int, index: int, stride: int, stopping: threading.Event, deadline: float,
                 window: int = 8, rotate: int = 200, max_requests: int = 50_000) -> None:
        super().__init__(name=f"lb-client-{index}", daemon=True)
        self.port, self.index, self.stride = port, index, stride
        self.stopping, self.deadline = stopping, deadline
        self.abandon = threading.Event()  # the scenario failed: end now, answered or not
        self.window, self.rotate, self.max_requests = window, rotate, max_requests
        self.stats = ClientStats()
        self._resend: collections.deque[tuple[int, int]] = collections.deque()  # (id, attempt)

    def run(self) -> None:
        st = self.stats
        try:
            while time.monotonic() < self.deadline and (self._resend or not self._done()) and \
                    not self.abandon.is_set():
                sock = self._connect()
                if sock is None:
                    continue
                with sock:
                    broken = self._session(sock)
                st.resent += len(broken)  # the connection broke before these were answered
                self._resend.extend((ident, attempt + 1) for ident, attempt in broken.items())
        finally:
            issued = {self.index + k * self.stride for k in range(st.sent)}
            st.unanswered = sorted(issued - st.answered.keys())

    def _done(self) -> bool:
        return self.stopping.is_set() or self.stats.sent >= self.max_requests

    def _next(self) -> Optional[tuple[int, int]]:
        """The next request to write: a resend first, else a new id (None: nothing left)."""
        if self._resend:
            return self._resend.popleft()
        if self._done():
            return None
        ident = self.index + self.stats.sent * self.stride
        self.stats.sent += 1
        return ident, 0

    def _connect(self) -> Optional[socket.socket]:
        st = self.stats
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5.0)
        except CONNECTION_ERRORS as exc:
            st.errors[f"connect: {type(exc).__name__}"] += 1
            time.sleep(0.01)
            return None
        except OSError as exc:  # a connect timeout: the balancer itself is stuck
            st.failures.append(f"connect: {type(exc).__name__}: {exc}")
            time.sleep(0.1)
            return None
        st.connects += 1
        return sock

    def _session(self, sock: socket.socket) -> dict[int, int]:
        """Requests on one connection, up to `rotate` of them: {id: attempt} of those still
        unanswered when it broke (empty when it ended normally)."""
        st = self.stats
        inflight: dict[int, int] = {}
        left = self.rotate
        try:
            while time.monotonic() < self.deadline and not self.abandon.is_set():
                while len(inflight) < self.window and left > 0:
                    request = self._next()
                    if request is None:
                        break
                    inflight[request[0]] = request[1]  # before the write: a failed write is in flight too
                    left -= 1
                    st.transmissions += 1
                    sock.sendall(frame(REQUEST.pack(*request)))
                if not inflight:
                    break
                ident, attempt, pid = REPLY.unpack(read_frame(sock))
                if inflight.pop(ident, None) != attempt:
                    raise ValueError(f"a reply to a request not in flight: id {ident} attempt {attempt}")
                st.answered[ident] = (attempt, pid)
        except CONNECTION_ERRORS as exc:
            st.errors[type(exc).__name__] += 1
        except (OSError, ValueError, struct.error) as exc:  # a timeout, a wrong reply: a failure, not retried quietly
            st.failures.append(f"{type(exc).__name__}: {exc}")
        return inflight


@dataclass
class Result:
    """The scenario's figures and the checks that failed (`problems`)."""

    backend: str
    sent: int = 0
    answered: int = 0
    lost: int = 0
    processed_twice: int = 0
    unanswered: int = 0
    transmissions: int = 0
    resent: int = 0
    connects: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    received_by: dict[str, int] = field(default_factory=dict)  # group start ("a1", "b1", "a2") -> requests
    stop_seconds: float = 0.0
    seconds: float = 0.0
    balancer_events: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def figure(self) -> str:
        """The README's figure, one line."""
        return f"requests sent / answered / lost: {self.sent} / {self.answered} / {self.lost}"

    def summary(self) -> str:
        errors = ", ".join(f"{n} {kind}" for kind, n in sorted(self.errors.items())) or "none"
        lines = [
            f"lb-restart ({self.backend} backend): {self.figure()}",
            f"  {self.transmissions} requests written, {self.resent} of them resends after a connection-level "
            f"error; {self.connects} connections; connection-level errors: {errors}",
            f"  requests that reached each group: {self.received_by}; group A's graceful stop took "
            f"{self.stop_seconds:.2f} s; whole run {self.seconds:.1f} s",
            f"  processed twice: {self.processed_twice}; never answered: {self.unanswered}; "
            f"other client errors: {len(self.failures)}",
            f"  haproxy's health checks saw: {', '.join(self.balancer_events) or 'no server state change'}",
        ]
        if self.problems:
            lines.append("  PROBLEMS: " + "; ".join(self.problems))
        return "\n".join(lines)


def _records(folder: str) -> list[tuple[int, int, int]]:
    """(pid, id, attempt) for every request a worker of this group start received."""
    out = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        out.extend((int(name), ident, attempt) for ident, attempt in REQUEST.iter_unpack(data))
    return out


def run(impl: ModuleType, haproxy: str, root: str, *, connections: int = 8, window: int = 8,
        whole_group: bool = False, before: float = 1.5, after: float = 2.5, budget: float = 60.0) -> Result:
    """The scenario (see the module docstring) on the backend `impl` (the `impl` fixture's
    module, see backend_module), with the haproxy executable `haproxy`, in the empty folder
    `root`; the client's connections get `budget` seconds in all. whole_group: group A's
    SIGTERM goes to each of its processes, not only to its supervisor."""
    result = Result("python" if impl.__name__ == "fastsock._py" else "c")
    began = time.monotonic()
    port_a, port_b = free_port(), free_port()
    group_a = Group(impl, "a", port_a, root)
    group_b = Group(impl, "b", port_b, root)
    balancer: Optional[HAProxy] = None
    stopping = threading.Event()
    clients: list[Client] = []
    finished = False
    try:
        group_a.start()
        group_b.start()
        balancer = HAProxy(haproxy, root, free_port(), port_a, port_b)
        deadline = time.monotonic() + budget
        clients = [Client(balancer.port, i, connections, stopping, deadline, window=window) for i in range(connections)]
        for c in clients:
            c.start()
        time.sleep(before)
        code, result.stop_seconds = group_a.stop(whole_group)
        if code != 0:
            result.problems.append(f"group A exited with status {code} after SIGTERM: {group_a.stderr()}")
        group_a.start()  # the same port again
        time.sleep(after)
        stopping.set()
        for c in clients:
            c.join(max(0.0, deadline - time.monotonic()) + 5.0)
            if c.is_alive():
                result.problems.append(f"{c.name} did not finish in time")
        for group in (group_a, group_b):
            code, _ = group.stop()
            if code != 0:
                result.problems.append(f"group {group.name} exited with status {code}: {group.stderr()}")
        finished = True
    finally:
        stopping.set()
        if not finished:
            for c in clients:
                c.abandon.set()
            for c in clients:
                c.join(10.0)
        for group in (group_a, group_b):
            group.kill()
        if balancer is not None:
            balancer.close()
            # haproxy -db prints each server state change on stderr (a warning)
            changes = re.findall(r"Server groups/(\w+) is (UP|DOWN)", balancer.log())
            result.balancer_events = [" ".join(change) for change in changes]
    result.seconds = time.monotonic() - began
    for group in (group_a, group_b):
        for start, child in enumerate(group.children, 1):
            if child.stderr():  # the Server logs warnings and errors there: there should be none
                result.problems.append(f"group {group.name}{start} logged: {child.stderr()[:2000]}")
    _tally(result, clients, root)
    return result


def _tally(result: Result, clients: list[Client], root: str) -> None:
    answered: dict[int, tuple[int, int]] = {}
    for c in clients:
        st = c.stats
        answered.update(st.answered)
        result.sent += st.sent
        result.transmissions += st.transmissions
        result.resent += st.resent
        result.connects += st.connects
        result.errors.update(st.errors)
        result.failures.extend(st.failures)
        result.unanswered += len(st.unanswered)
    result.answered = len(answered)
    seen: collections.Counter[int] = collections.Counter()
    lost = []
    for folder in sorted(os.listdir(root)):
        path = os.path.join(root, folder)
        if not os.path.isdir(path):
            continue
        records = _records(path)
        result.received_by[folder] = len(records)
        for pid, ident, attempt in records:
            seen[ident] += 1
            if answered.get(ident) != (attempt, pid):
                lost.append((folder, pid, ident, attempt))
    result.lost = len(lost)
    result.processed_twice = sum(1 for n in seen.values() if n > 1)
    if lost:
        result.problems.append(f"{len(lost)} requests reached a server and got no reply from it, e.g. {lost[:5]}")
    if result.processed_twice:
        result.problems.append(f"{result.processed_twice} requests were handled more than once")
    if result.unanswered:
        result.problems.append(f"{result.unanswered} requests sent were never answered")
    if result.failures:
        result.problems.append(f"client errors that are not connection-level: {result.failures[:5]}")
    # A graceful stop answers what it received and reads what it will not use before closing,
    # so a connection it ends sees EOF; a reset would mean it closed with unread requests
    # (which the client then resends: no record, so `lost` alone could not show it).
    broken = {k: n for k, n in result.errors.items() if k != "EOFError" and not k.startswith("connect: ")}
    if broken:
        result.problems.append(f"connections ended otherwise than by EOF after their replies: {broken}")
    if not result.received_by.get("a2"):
        result.problems.append("the restarted group A got no request through the balancer")
    if not sum(result.errors.values()):
        result.problems.append("no connection had a request in flight when group A stopped: nothing was tested")
    if result.answered < 100:
        result.problems.append(f"too little traffic to tell anything ({result.answered} requests answered)")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["c", "python"], default="c")
    parser.add_argument("--connections", type=int, default=8, help="client connections (default 8)")
    parser.add_argument("--window", type=int, default=8, help="requests in flight per connection (default 8)")
    parser.add_argument("--signal-group", action="store_true",
                        help="send group A's SIGTERM to all its processes (systemd's KillMode=control-group)")
    args = parser.parse_args(argv)
    haproxy = tool("haproxy")
    if haproxy is None:
        print("haproxy is not installed (Debian package haproxy)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lb-restart-") as root:
        result = run(backend_module(args.backend), haproxy, root, connections=args.connections, window=args.window,
                     whole_group=args.signal_group)
    print(result.summary())
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
