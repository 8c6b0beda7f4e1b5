"""Server limits and timeouts on both backends: max_connections, idle_timeout, frame_timeout
(slowloris), max_buffer, and accept() running out of descriptors (EMFILE)."""

from __future__ import annotations

import gc
import platform
import selectors
import signal
import socket as stdsocket
import sys
import threading
import time
import weakref

import pytest
from serverutil import (
    WAIT,
    Child,
    Recorder,
    Running,
    connect,
    echo,
    frame,
    is_eof,
    read_frame,
    serving,
    wait_until,
)

from fastsock import FrameTooLarge

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def S(impl):
    return impl


# ---- max_connections ------------------------------------------------------------------


def test_max_connections_holds_newcomers_in_the_backlog(S):
    rec = Recorder()
    with serving(S, echo, framing=S.LengthPrefix(), max_connections=2, on_connect=rec.on_connect) as (server, addr):
        a, b = connect(addr), connect(addr)
        for c in (a, b):
            c.sendall(frame(b"in"))
            assert read_frame(c) == b"in"
        third = connect(addr)  # the kernel completes the handshake: it waits in the backlog
        third.sendall(frame(b"waiting"))
        third.settimeout(0.5)
        with pytest.raises((TimeoutError, stdsocket.timeout)):
            third.recv(1)
        assert server.stats()["accepted"] == 2 and server.stats()["connections"] == 2
        a.close()
        third.settimeout(WAIT)
        assert read_frame(third) == b"waiting"  # accepted once below the limit
        assert server.stats()["accepted"] == 3
        b.sendall(frame(b"still"))
        assert read_frame(b) == b"still"
        b.close()
        third.close()
    assert len(rec.connected) == 3


# ---- idle_timeout ---------------------------------------------------------------------


def test_idle_connection_is_closed_and_an_active_one_is_not(S):
    rec = Recorder()
    with serving(S, echo, framing=S.LengthPrefix(), idle_timeout=0.5, on_close=rec.on_close) as (server, addr):
        idle = connect(addr)
        active = connect(addr)
        started = time.monotonic()
        for i in range(15):  # 1.5 s of activity, every 0.1 s
            active.sendall(frame(b"%d" % i))
            assert read_frame(active) == b"%d" % i
            time.sleep(0.1)
        assert is_eof(idle, timeout=WAIT)
        assert time.monotonic() - started < WAIT
        active.sendall(frame(b"alive"))
        assert read_frame(active) == b"alive"
        wait_until(rec.closes, what="on_close")
        (_, exc), = rec.closes()
        assert isinstance(exc, S.IdleTimeout) and isinstance(exc, TimeoutError)
        assert server.stats()["timeouts"] == 1
        active.close()
        idle.close()


def test_idle_timeout_with_many_connections_closes_them_all(S):
    rec = Recorder()
    with serving(S, echo, framing=S.LengthPrefix(), idle_timeout=0.3, on_close=rec.on_close,
                 backlog=512) as (server, addr):
        socks = [connect(addr) for _ in range(300)]
        try:
            wait_until(lambda: len(rec.closes()) == 300, what="300 idle timeouts")
            assert all(isinstance(exc, S.IdleTimeout) for _, exc in rec.closes())
            assert server.stats()["timeouts"] == 300 and server.stats()["connections"] == 0
        finally:
            for s in socks:
                s.close()


# ---- frame_timeout --------------------------------------------------------------------


def test_slowloris_one_byte_per_100ms_is_closed_by_frame_timeout(S):
    rec = Recorder()
    with serving(S, echo, framing=S.LengthPrefix(), frame_timeout=0.5, on_close=rec.on_close) as (server, addr):
        slow = connect(addr)
        fine = connect(addr)
        data = frame(b"x" * 100)  # 104 bytes: 10 s at this pace
        started = time.monotonic()
        closed_after = None
        for i in range(len(data)):
            try:
                slow.sendall(data[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed_after = i
                break
            if rec.closes():
                closed_after = i
                break
            if i % 5 == 0:  # the other connection is served meanwhile
                fine.sendall(frame(b"ok"))
                assert read_frame(fine) == b"ok"
            time.sleep(0.1)
            assert time.monotonic() - started < WAIT
        assert closed_after is not None and closed_after < len(data) - 1, "the slow frame was not cut short"
        assert is_eof(slow)
        (_, exc), = rec.closes()
        assert isinstance(exc, S.FrameTimeout)
        assert server.stats()["timeouts"] == 1
        fine.sendall(frame(b"after"))
        assert read_frame(fine) == b"after"
        slow.close()
        fine.close()


@pytest.mark.slow  # waits out timers for seconds: main and debug run it
def test_frame_timeout_restarts_with_each_frame(S):
    rec = Recorder()
    with serving(S, echo, framing=S.LengthPrefix(), frame_timeout=1.0, on_close=rec.on_close) as (server, addr):
        with connect(addr) as c:
            # 12 frames, each taking ~0.3 s to arrive, the next begun in the same write that
            # ends the previous one: the connection always holds part of a frame for 3.6 s
            pending = frame(b"f0")[:3]
            c.sendall(pending)
            for i in range(12):
                time.sleep(0.3)
                c.sendall(frame(b"f%d" % i)[3:] + frame(b"f%d" % (i + 1))[:3])
                assert read_frame(c) == b"f%d" % i
            assert not rec.closes()
            assert server.stats()["timeouts"] == 0


def test_raw_mode_frame_timeout_counts_unconsumed_bytes(S):
    rec = Recorder()

    def handler(conn, data):
        if len(data) >= 10:
            conn.write(bytes(data[:10]))
            return 10
        return 0

    with serving(S, handler, frame_timeout=0.4, on_close=rec.on_close) as (server, addr):
        with connect(addr) as ok:
            ok.sendall(b"0123456789")
            assert ok.recv(10) == b"0123456789"
            slow = connect(addr)
            for _ in range(50):
                try:
                    slow.sendall(b"z")
                except OSError:
                    break
                if rec.closes():
                    break
                time.sleep(0.1)
            assert is_eof(slow)
            slow.close()
        wait_until(rec.closes, what="on_close")
        assert isinstance(rec.closes()[0][1], S.FrameTimeout)


# ---- max_buffer -----------------------------------------------------------------------


def test_max_buffer_raw_mode_handler_that_never_consumes(S):
    rec = Recorder()
    with serving(S, lambda conn, data: 0, read_size=512, max_buffer=2048, on_close=rec.on_close) as (server, addr):
        with connect(addr) as c:
            try:
                c.sendall(b"q" * 4096)
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert is_eof(c)
        wait_until(rec.closes, what="on_close")
        exc = rec.closes()[0][1]
        assert isinstance(exc, FrameTooLarge) and exc.limit == 2048
        assert server.stats()["errors"] == 1


def test_max_buffer_below_a_frame_size_refuses_the_frame_before_reading_it(S):
    rec = Recorder()
    with serving(S, echo, framing=S.LengthPrefix(), read_size=1024, max_buffer=4096, on_close=rec.on_close) as (
            server, addr):
        with connect(addr) as c:
            c.sendall(frame(b"small"))
            assert read_frame(c) == b"small"
            c.sendall(frame(b"B" * 10000)[:100])  # announces 10,000 bytes: can never fit 4,096
            assert is_eof(c)
        wait_until(rec.closes, what="on_close")
        exc = rec.closes()[0][1]
        assert isinstance(exc, FrameTooLarge) and exc.size == 10004 and exc.limit == 4096


def test_delimiter_not_found_within_max_size(S):
    rec = Recorder()
    with serving(S, echo, framing=S.Delimiter(b"\n", max_size=100), on_close=rec.on_close) as (server, addr):
        with connect(addr) as c:
            c.sendall(b"ok\n")
            assert c.recv(3) == b"ok\n"
            c.sendall(b"y" * 300)
            assert is_eof(c)
        wait_until(rec.closes, what="on_close")
        assert isinstance(rec.closes()[0][1], FrameTooLarge)


# ---- EMFILE: accept() out of descriptors ---------------------------------------------

EMFILE_SERVER = """
    import logging, os, resource, sys
    import fastsock
    logging.basicConfig(level=logging.ERROR, format="LOG %(levelname)s %(message)s", stream=sys.stdout)
    server = fastsock.Server(lambda conn, f: f, framing=fastsock.LengthPrefix(4), backlog=512)
    addr = server.listen(("127.0.0.1", 0))
    # room for int(sys.argv[1]) descriptors beyond those open now (the loop takes a few)
    limit = len(os.listdir("/proc/self/fd")) + int(sys.argv[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    print("PORT", addr[1], flush=True)
    server.serve_forever()
    print("DONE", server.stats()["accepted"], flush=True)
"""


def _replies(socks, timeout):
    """Which of `socks` (non-blocking) got a 5-byte frame within `timeout`."""
    got = {}
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    deadline = time.monotonic() + timeout
    buf = {i: b"" for i in range(len(socks))}
    try:
        while len(got) < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(0.05):
                i = key.data
                data = socks[i].recv(100)
                if not data:
                    sel.unregister(socks[i])
                    continue
                buf[i] += data
                if len(buf[i]) >= 5:
                    got[i] = buf[i]
                    sel.unregister(socks[i])
    finally:
        sel.close()
    return got


@pytest.mark.slow  # waits out timers for seconds: main and debug run it
def test_emfile_keeps_serving_and_accepts_again_when_descriptors_free(S):
    room = 30  # descriptors left to the server: the loop's own (up to 4) and connections
    with Child(S, EMFILE_SERVER, str(room)) as child:
        port = int(child.line("PORT").split()[1])
        clients = []
        try:
            for _ in range(room + 20):
                c = connect(("127.0.0.1", port))
                c.sendall(frame(b"h"))
                c.setblocking(False)
                clients.append(c)
            first = _replies(clients, 3.0)
            served = sorted(first)
            assert room - 5 <= len(served) <= room, (len(served), room)
            starved = [i for i in range(len(clients)) if i not in first]
            assert len(starved) >= 20
            # existing connections are still served while accept() keeps failing
            for i in served[:5]:
                clients[i].setblocking(True)
                clients[i].settimeout(WAIT)
                clients[i].sendall(frame(b"again"))
                assert read_frame(clients[i]) == b"again"
            time.sleep(1.5)  # several back-off periods of failing accept()
            # free 25 descriptors: the starved connections are accepted and answered
            for i in served[:25]:
                clients[i].close()
            rest = _replies([clients[i] for i in starved], WAIT)
            assert len(rest) == len(starved)
        finally:
            for c in clients:
                c.close()
        child.signal(signal.SIGTERM)
        assert child.wait() == 0
        logs = [line for line in child.lines() if line.startswith("LOG")]
        assert len(logs) == 1, logs  # logged once, however often accept() failed
        assert "accept()" in logs[0] and "Too many open files" in logs[0]
        assert int(child.line("DONE").split()[1]) == len(clients)


def test_closed_connections_are_not_held_until_their_timers_deadline(S):
    # A long idle_timeout / frame_timeout: the timers of closed connections must not keep
    # their Connection objects alive until the deadline (the pure backend's heaps).
    count = 200
    refs = []

    def on_close(conn, exc):
        refs.append(weakref.ref(conn))

    with serving(S, echo, framing=S.LengthPrefix(), idle_timeout=1e4, frame_timeout=1e4,
                 on_close=on_close) as (server, addr):
        sent = 0
        for i in range(count):
            with connect(addr) as c:
                c.sendall(frame(b"x"))
                assert read_frame(c) == b"x"
                sent += 5
                if i % 2:
                    c.sendall(frame(b"partial")[:5])  # a frame begun: its frame timer runs
                    sent += 5
                    wait_until(lambda: server.stats()["bytes_in"] >= sent, what="the partial frame")  # noqa: B023
        wait_until(lambda: len(refs) == count, what="every close")
        done = []
        server.call_soon_threadsafe(lambda: done.append(gc.collect()))  # on the loop, between turns
        wait_until(lambda: done, what="the collection")
        alive = sum(ref() is not None for ref in refs)
        assert alive <= count // 2, f"{alive} of {count} closed Connection objects are still alive"


def test_huge_timeouts_and_grace_mean_never_and_do_not_overflow(S):
    # idle_timeout / frame_timeout / stop(grace) far past what int64 nanoseconds hold (or
    # inf): saturated to "never", not wrapped into the past (which closed everything at once).
    timeout = 1e11
    rec = Recorder()
    server = S.Server(echo, framing=S.LengthPrefix(), idle_timeout=timeout, frame_timeout=timeout,
                      on_close=rec.on_close)
    addr = server.listen(("127.0.0.1", 0))
    try:
        with Running(server) as running, connect(addr) as c, connect(addr) as partial:
            c.sendall(frame(b"a"))
            assert read_frame(c) == b"a"
            partial.sendall(frame(b"begun")[:6])  # the frame clock runs
            time.sleep(0.3)  # some turns of the loop: nothing may time out (not a timing assertion)
            c.sendall(frame(b"b"))
            assert read_frame(c) == b"b"
            assert rec.closes() == [] and server.stats()["timeouts"] == 0
            server.stop(1e10)
            server.stop(float("inf"))
            assert is_eof(c)  # the half-close of a graceful stop, not an abort
            time.sleep(0.2)
            assert rec.closes() == []  # waits for the peers' EOF, as long as it takes
            c.close()
            partial.close()
            running.join()
        assert server.stats()["timeouts"] == 0
        assert len(rec.closes()) == 2
    finally:
        server.close()


@pytest.mark.slow  # waits out timers for seconds: main and debug run it
def test_a_reply_after_a_slow_handler_restarts_the_idle_clock_when_it_leaves(S):
    # The handler takes longer than idle_timeout: its reply leaves after it, and the idle
    # clock restarts then (not at the read), so the connection is not timed out at once.
    rec = Recorder()

    def handler(conn, f):
        if f == b"slow":
            time.sleep(1.5)
        return f

    with serving(S, handler, framing=S.LengthPrefix(), idle_timeout=1.0, on_close=rec.on_close) as (server, addr), \
            connect(addr) as c:
        c.sendall(frame(b"slow"))
        assert read_frame(c) == b"slow"
        c.sendall(frame(b"right after"))
        assert read_frame(c) == b"right after"
        assert rec.closes() == [] and server.stats()["timeouts"] == 0
        assert is_eof(c)  # and it does time out, idle_timeout after its last byte
        wait_until(lambda: rec.closes(), what="the idle close")
    assert isinstance(rec.closes()[0][1], S.IdleTimeout)


@pytest.mark.parametrize("size", [4097, 10 * 1024])
def test_read_size_1_still_takes_frames_larger_than_a_buffer_block(S, size):
    # read_size=1: a partial frame held must still let the buffer grow (C: half of a 1-byte
    # read was 0, so a frame past the first 4 KiB block was refused as too large).
    rec = Recorder()
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    with serving(S, echo, framing=S.LengthPrefix(), read_size=1, on_close=rec.on_close) as (server, addr), \
            connect(addr) as c:
        c.sendall(frame(payload))
        assert read_frame(c) == payload
        c.sendall(frame(b"next"))
        assert read_frame(c) == b"next"
        assert rec.closes() == [] and server.stats()["errors"] == 0


# ---- transient accept() errors, every time: a policy denying accept (EPERM) ------------

DENY_ACCEPT_SERVER = """
    import ctypes, errno, struct, sys, time
    import fastsock

    def deny_accept():
        # A seccomp filter on this thread (the loop's): accept4()/accept() fail with EPERM, as
        # a security policy makes them (transient for the server: skip that connection).
        libc = ctypes.CDLL(None, use_errno=True)
        def op(code, k, jt=0, jf=0):
            return struct.pack("HBBI", code, jt, jf, k)
        ld, jeq, ret, allow = 0x20, 0x15, 0x06, 0x7FFF0000
        prog = b"".join([op(ld, 4), op(jeq, 0xC000003E, 1, 0), op(ret, allow),  # x86_64 only
                         op(ld, 0), op(jeq, 288, 1, 0), op(jeq, 43, 0, 1),  # accept4, accept
                         op(ret, 0x00050000 | errno.EPERM), op(ret, allow)])
        buf = ctypes.create_string_buffer(prog)
        class Prog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
        fprog = Prog(len(prog) // 8, ctypes.addressof(buf))
        if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "seccomp")

    def handler(conn, f):
        if f == b"deny":
            deny_accept()
        if f in (b"deny", b"cpu"):
            return b"%.6f" % time.process_time()
        return f

    server = fastsock.Server(handler, framing=fastsock.LengthPrefix(4), backlog=512)
    addr = server.listen(("127.0.0.1", 0))
    print("PORT", addr[1], flush=True)
    server.serve_forever()
    print("DONE", server.stats()["accepted"], flush=True)
"""


@pytest.mark.skipif(platform.machine() != "x86_64" or sys.platform != "linux", reason="an x86_64 seccomp filter")
def test_accept_failing_every_time_is_neither_a_spin_nor_an_overflow(S):
    # Every accept() fails with a transient error (EPERM from a policy) while the backlog
    # stays full: the loop keeps serving, its events stay bounded (the compiled loop
    # counted no failed accept in its budget: past its events array, forever), and it rests
    # between runs of failures instead of spinning on the always-readable listener.
    with Child(S, DENY_ACCEPT_SERVER) as child:
        port = int(child.line("PORT").split()[1])
        with connect(("127.0.0.1", port), timeout=10.0) as c:
            c.sendall(frame(b"deny"))
            float(read_frame(c))
            waiting = [connect(("127.0.0.1", port), timeout=10.0) for _ in range(40)]  # in the backlog
            try:
                time.sleep(0.2)
                c.sendall(frame(b"cpu"))
                start, t0 = float(read_frame(c)), time.monotonic()
                for i in range(20):  # still served while accept() keeps failing
                    c.sendall(frame(b"%d" % i))
                    assert read_frame(c) == b"%d" % i
                    time.sleep(0.05)
                c.sendall(frame(b"cpu"))
                cpu, wall = float(read_frame(c)) - start, time.monotonic() - t0
                assert cpu < 0.5 * wall, f"{cpu:.2f} s of CPU in {wall:.2f} s: spinning on accept()"
            finally:
                for s in waiting:
                    s.close()
        child.signal(signal.SIGTERM)
        assert child.wait() == 0, child.stderr()
        assert child.line("DONE").split()[1] == "1"


@pytest.mark.slow  # waits out timers for seconds: main and debug run it
def test_a_slow_handler_does_not_time_out_the_replies_of_its_batch(S):
    # Two connections ready in the same turn, the first one's handler slower than
    # idle_timeout: the second one's reply leaves after it and restarts its idle clock then
    # (a clock read before the batch timed it out at once, dropping its reply).
    rec = Recorder()
    gate = threading.Event()

    def handler(conn, f):
        if f == b"gate":
            gate.wait(WAIT)  # the loop waits here while both next frames arrive
        elif f == b"slow":
            time.sleep(1.5)
        return f

    with serving(S, handler, framing=S.LengthPrefix(), idle_timeout=1.0, on_close=rec.on_close) as (server, addr), \
            connect(addr) as a, connect(addr) as b, connect(addr) as g:
        g.sendall(frame(b"gate"))
        time.sleep(0.2)  # the loop is in the gate's handler (not a timing assertion)
        a.sendall(frame(b"slow"))
        b.sendall(frame(b"quick"))
        time.sleep(0.2)
        gate.set()
        assert read_frame(g) == b"gate"
        assert read_frame(a) == b"slow"
        assert read_frame(b) == b"quick"
        b.sendall(frame(b"again"))
        assert read_frame(b) == b"again"
        a.sendall(frame(b"again"))
        assert read_frame(a) == b"again"
