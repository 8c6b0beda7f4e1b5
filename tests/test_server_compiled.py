"""What only the compiled Server (src_c/fs_server.c under fastsock/_c/server.pxi) can get
wrong: C slots reused under a Connection object that outlived its connection, the memory
handed over to raw-mode views, the per-connection cost of idle connections, and "one send
per connection per turn" with many connections in one turn."""

from __future__ import annotations

import gc
import os
import resource
import socket as stdsocket
import subprocess
import sys
import tempfile
import textwrap
import threading

import pytest
from serverutil import WAIT, Recorder, connect, frame, frames, read_frame, read_frames, recv_exact, serving, wait_until
from sockutil import subprocess_env

pytestmark = [pytest.mark.c_only, pytest.mark.timeout(120)]


@pytest.fixture
def C():
    return pytest.importorskip("fastsock._c._speedups")


def test_a_stale_connection_never_reaches_the_connection_that_reuses_its_slot(C):
    rec = Recorder()
    with serving(C, lambda conn, f: f, framing=C.LengthPrefix(), on_connect=rec.on_connect,
                 on_close=rec.on_close) as (server, addr):
        first = connect(addr)
        first.sendall(frame(b"one"))
        assert read_frame(first) == b"one"
        old = rec.connected[0]
        old_peer, old_sockname = old.peer, old.sockname
        first.close()
        wait_until(lambda: len(rec.closes()) == 1, what="the first close")
        # the next connections get the freed C slot (a LIFO free list)
        second = connect(addr)
        second.sendall(frame(b"two"))
        assert read_frame(second) == b"two"
        new = rec.connected[1]
        assert new is not old
        assert old.closed and old.fileno() == -1 and old.pending == 0
        assert old.peer == old_peer and old.sockname == old_sockname  # kept from its own slot
        done = threading.Event()
        errors = []

        def on_loop():
            try:
                with pytest.raises(BrokenPipeError):
                    old.send(b"stale")
                with pytest.raises(BrokenPipeError):
                    old.write(b"stale")
                old.close()
                old.abort()
                old.pause_reading()
                old.resume_reading()
            except BaseException as exc:
                errors.append(exc)
            done.set()

        server.call_soon_threadsafe(on_loop)
        assert done.wait(WAIT) and not errors, errors
        second.sendall(frame(b"still mine"))  # the new connection was not touched
        assert read_frame(second) == b"still mine"
        assert not new.closed
        second.close()
        wait_until(lambda: len(rec.closes()) == 2, what="the second close")
    assert [exc for _, exc in rec.closes()] == [None, None]


def test_raw_views_kept_across_many_reads_never_see_reused_memory(C):
    kept = []

    def handler(conn, data):
        kept.append((data[:], bytes(data)))  # a slice that outlives the call, and its copy
        conn.write(b"k")
        return len(data)

    with serving(C, handler, read_size=4096) as (_, addr), connect(addr) as c:
        for i in range(200):
            c.sendall(bytes([i % 251]) * (1 + i % 97))
            assert recv_exact(c, 1) == b"k"
    gc.collect()
    assert all(bytes(view) == copy for view, copy in kept)
    del kept[:]  # the blocks handed over are freed with their last view (ASan builds check it)
    gc.collect()


def test_one_send_per_connection_per_turn_with_many_connections(C):
    count = 40
    with serving(C, lambda conn, f: f, framing=C.LengthPrefix()) as (server, addr):
        socks = [connect(addr) for _ in range(count)]
        try:
            wait_until(lambda: server.stats()["connections"] == count, what="every connection")
            before = server.stats()["writes"]
            burst = frames(*[b"%03d" % i for i in range(30)])
            for s in socks:
                s.sendall(burst)
            for s in socks:
                assert read_frames(s, 30) == [b"%03d" % i for i in range(30)]
            writes = server.stats()["writes"] - before
            # every connection's 30 replies came from one read: one send each
            assert count <= writes <= 2 * count, writes
        finally:
            for s in socks:
                s.close()


def test_connection_objects_are_small(C):
    seen = []
    with serving(C, lambda conn, f: f, framing=C.LengthPrefix(), on_connect=seen.append) as (_, addr), \
            connect(addr) as c:
        c.sendall(frame(b"x"))
        read_frame(c)
        assert sys.getsizeof(seen[0]) <= 128


IDLE_SERVER = """
    import resource, sys
    import fastsock
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, int(sys.argv[1]) + 256), hard))
    server = fastsock.Server(lambda conn, f: f, framing=fastsock.LengthPrefix(4))
    print("PORT", server.listen(("127.0.0.1", 0))[1], flush=True)
    server.serve_forever()
"""


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmRSS from /proc")
@pytest.mark.skipif("san" in os.environ.get("LD_PRELOAD", ""), reason="sanitizers add their own memory")
def test_idle_connections_cost_less_than_2_kib_each(C):
    count = 3000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < count + 256:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {count + 256}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, count + 256), hard))
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(IDLE_SERVER), str(count)], stdout=subprocess.PIPE,
                            text=True, env=subprocess_env("0"), cwd=tempfile.gettempdir())  # no source tree on sys.path
    socks = []
    try:
        port = int(proc.stdout.readline().split()[1])
        addr = ("127.0.0.1", port)
        with connect(addr) as c:  # warm the code paths
            c.sendall(frame(b"warm"))
            read_frame(c)
        before = _rss_kib(proc.pid)
        for _ in range(count):
            s = stdsocket.create_connection(addr, timeout=WAIT)
            s.sendall(frame(b"hello"))  # each one read, answered, then idle
            socks.append(s)
        for s in socks:
            assert read_frame(s) == b"hello"
        per_conn = (_rss_kib(proc.pid) - before) * 1024 / count
        assert per_conn <= 2048, f"{per_conn:.0f} bytes of RSS per idle connection"
    finally:
        for s in socks:
            s.close()
        proc.kill()
        proc.wait()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_raw_data_obj_kept_after_the_call_refuses_new_exports(C):
    # data.obj (the C window's exporter) kept by the handler: re-exporting it after the call
    # raises ValueError, never reads the reused window (the next read, another connection's).
    kept = []

    def handler(conn, data):
        kept.append(data.obj)
        assert bytes(memoryview(data.obj)) == bytes(data)  # during the call: the same bytes
        conn.write(b"k")
        return len(data)

    with serving(C, handler, read_size=4096) as (_, addr), connect(addr) as a, connect(addr) as b:
        for i in range(10):
            for c in (a, b):
                c.sendall(b"%04d" % i)
                assert recv_exact(c, 1) == b"k"
    assert len(kept) >= 20
    for obj in kept:
        with pytest.raises(ValueError):
            memoryview(obj)
        with pytest.raises(ValueError):
            bytes(obj)
