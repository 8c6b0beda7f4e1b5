"""workers=N on both backends, in a child process (the supervisor) and its forked workers:
connections spread over the workers, a killed worker loses only its own connections and
comes back, a crashing one is restarted, SIGTERM or stop() in the supervisor stops them all,
and every process is reaped."""

from __future__ import annotations

import os
import signal
import time

import pytest
from serverutil import (
    WAIT,
    Child,
    connect,
    frame,
    is_eof,
    pid_gone,
    read_frame,
    wait_until,
)

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="workers need fork()"),
]

WORKERS_SERVER = """
    import os, sys, threading, time
    import fastsock
    def handler(conn, f):
        if f == b"crash":
            os._exit(3)
        return b"%d" % os.getpid()
    server = fastsock.Server(handler, framing=fastsock.LengthPrefix(4), workers=int(sys.argv[1]))
    where = sys.argv[2]
    if where == "tcp":
        address = server.listen(("127.0.0.1", 0))
    elif where == "sock":
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        address = server.listen(sock=s)
    else:
        address = server.listen(where)
    if len(sys.argv) > 3:  # stop() from another thread of the supervisor once this file exists
        flag = sys.argv[3]
        def stopper():
            while not os.path.exists(flag):
                time.sleep(0.02)
            server.stop(2.0)
        threading.Thread(target=stopper, daemon=True).start()
    print("ADDR", address[1] if isinstance(address, tuple) else address, "PID", os.getpid(),
          server.stats()["listeners"], flush=True)
    server.serve_forever()
    print("DONE", server.stats()["running"], server.stats()["listeners"], flush=True)
"""


@pytest.fixture
def S(impl):
    return impl


def _address(child):
    line = child.line("ADDR").split()
    where = line[1]
    return (("127.0.0.1", int(where)) if where.isdigit() else where), int(line[3]), int(line[4])


def _ask(address):
    """A new connection that got one reply: (socket, the worker's pid). Connections are
    refused until the first worker listens (the supervisor only reserves the port)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            s = connect(address)
            break
        except (ConnectionRefusedError, FileNotFoundError):
            assert time.monotonic() < deadline, "no worker listens"
            time.sleep(0.02)
    s.sendall(frame(b"pid?"))
    return s, int(read_frame(s))


def _collect(address, want, conns, per_pid=3):
    """Open connections until `want(pids)` holds (bounded in time, not in count: a restarted
    worker needs its back-off delay and a fork first); keeps up to `per_pid` of them per
    worker in `conns` as (sock, pid) and closes the rest."""
    deadline = time.monotonic() + WAIT
    while True:
        sock, pid = _ask(address)
        if sum(1 for _, p in conns if p == pid) < per_pid:
            conns.append((sock, pid))
        else:
            sock.close()
        if want({p for _, p in conns}):
            return
        assert time.monotonic() < deadline, f"gave up waiting: workers seen {sorted({p for _, p in conns})}"
        time.sleep(0.005)


def test_workers_spread_survive_a_killed_worker_and_stop_on_sigterm(S):
    with Child(S, WORKERS_SERVER, "3", "tcp") as child:
        address, parent, listeners = _address(child)
        assert listeners == 1
        conns = []
        try:
            _collect(address, lambda pids: len(pids) == 3, conns)
            pids = {p for _, p in conns}
            assert parent not in pids
            victim = sorted(pids)[0]
            os.kill(victim, signal.SIGKILL)
            # dead (a zombie at least): its descriptors, listener included, are closed; a
            # connection the kernel queued on its listener before that is lost with it
            wait_until(lambda: pid_gone(victim), what="the killed worker gone")
            for sock, pid in conns:
                if pid == victim:
                    assert is_eof(sock)  # its own connections are lost ...
                else:
                    sock.sendall(frame(b"still?"))
                    assert int(read_frame(sock)) == pid  # ... and only those
            # a new worker takes its place
            fresh = []
            _collect(address, lambda ps: bool(ps - pids), fresh)
            conns += fresh
            now = {p for _, p in fresh} | (pids - {victim})
            assert victim not in {p for _, p in fresh}
        finally:
            for sock, _ in conns:
                sock.close()
        child.signal(signal.SIGTERM)
        assert child.wait() == 0
        assert child.line("DONE").split()[1:] == ["False", "0"]
        for pid in now | {victim}:
            wait_until(lambda p=pid: pid_gone(p), what=f"worker {pid} gone")
        assert "restarting it" in child.stderr()


def test_a_crashing_worker_is_restarted(S):
    with Child(S, WORKERS_SERVER, "2", "tcp") as child:
        address, _, _ = _address(child)
        conns = []
        try:
            _collect(address, lambda pids: len(pids) == 2, conns)
            first = {p for _, p in conns}
            sock, pid = conns[0]
            sock.sendall(frame(b"crash"))
            assert is_eof(sock)
            wait_until(lambda: "exited with status 3" in child.stderr(), what="the crash logged")
            fresh = []
            _collect(address, lambda ps: bool(ps - first), fresh)
            conns += fresh
        finally:
            for s, _ in conns:
                s.close()
        child.signal(signal.SIGINT)
        assert child.wait() == 0


def test_stop_in_the_supervisor_stops_every_worker(S, tmp_path):
    flag = str(tmp_path / "stop-now")
    with Child(S, WORKERS_SERVER, "2", "tcp", flag) as child:
        address, _, _ = _address(child)
        conns = []
        try:
            _collect(address, lambda pids: len(pids) == 2, conns)
            open(flag, "w").close()
            for sock, _ in conns:
                assert is_eof(sock)  # each worker's graceful stop half-closes its connections
        finally:
            for s, _ in conns:
                s.close()
        assert child.wait() == 0
        assert child.line("DONE").split()[1:] == ["False", "0"]
        for pid in {p for _, p in conns}:
            wait_until(lambda p=pid: pid_gone(p), what=f"worker {pid} gone")


@pytest.mark.parametrize("where", ["sock", "unix"])
def test_workers_share_an_adopted_or_unix_listener(S, where, tmp_path):
    target = "sock" if where == "sock" else str(tmp_path / "workers.sock")
    with Child(S, WORKERS_SERVER, "2", target) as child:
        address, parent, _ = _address(child)
        conns = []
        try:
            for _ in range(20):
                conns.append(_ask(address))
            assert parent not in {p for _, p in conns}
        finally:
            for s, _ in conns:
                s.close()
        child.signal(signal.SIGTERM)
        assert child.wait() == 0


def test_workers_stopped_before_serving_fork_nothing(S):
    code = """
        import os, fastsock
        server = fastsock.Server(lambda c, f: f, framing=fastsock.LengthPrefix(4), workers=4)
        server.listen(("127.0.0.1", 0))
        server.stop()
        server.serve_forever()
        print("DONE", server.stats()["listeners"], len(os.listdir("/proc/self/task")), flush=True)
    """
    with Child(S, code) as child:
        assert child.wait() == 0
        assert child.line("DONE").split()[1:] == ["0", "1"]


def test_one_ctrl_c_to_the_process_group_stops_gracefully_and_a_second_aborts(S):
    # A terminal's Ctrl-C reaches the supervisor and every worker at once: the stop the
    # supervisor forwards can reach a worker before (or after) the worker's own SIGINT, and
    # that must be one graceful stop, not an abort; only a second Ctrl-C aborts.
    with Child(S, WORKERS_SERVER, "2", "tcp") as child:
        address, _, _ = _address(child)
        conns = []
        try:
            _collect(address, lambda pids: len(pids) == 2, conns, per_pid=1)
            # the group's SIGINT, in the order that was an abort: the supervisor's forwarded
            # stop first, each worker's own SIGINT after it
            child.signal(signal.SIGINT)
            for sock, _ in conns:
                assert is_eof(sock)  # the graceful stop's half-close: the worker waits for our EOF
            for _, pid in conns:
                os.kill(pid, signal.SIGINT)
            time.sleep(0.5)
            with pytest.raises(AssertionError):
                child.wait(timeout=1.0)  # still in the grace period: not aborted
            assert all(not pid_gone(pid) for _, pid in conns)
            os.killpg(child.proc.pid, signal.SIGINT)  # the second Ctrl-C
            assert child.wait() == 0
            assert child.line("DONE").split()[1:] == ["False", "0"]
            for _, pid in conns:
                wait_until(lambda p=pid: pid_gone(p), what=f"worker {pid} reaped")
        finally:
            for sock, _ in conns:
                sock.close()
