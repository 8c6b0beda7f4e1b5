"""Other threads and the loop, on both backends: replies from a concurrent.futures pool,
call_soon_threadsafe, cross-thread send/write/close ordering and errors."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time

import pytest
from serverutil import (
    LOCAL,
    WAIT,
    Recorder,
    Running,
    connect,
    frame,
    frames,
    is_eof,
    read_frame,
    read_frames,
    recv_exact,
    serving,
    wait_until,
)

from fastsock import FrameTooLarge

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def S(impl):
    return impl


def test_replies_from_a_thread_pool(S):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        def work(conn, f):
            time.sleep(0.001)
            conn.send(f.upper())

        def handler(conn, f):
            pool.submit(work, conn, f)
            return None

        with serving(S, handler, framing=S.LengthPrefix()) as (server, addr):
            socks = [connect(addr) for _ in range(10)]
            try:
                for k, s in enumerate(socks):
                    s.sendall(frames(*[b"c%d-%d" % (k, i) for i in range(50)]))
                for k, s in enumerate(socks):
                    got = read_frames(s, 50)
                    assert sorted(got) == sorted(b"C%d-%d" % (k, i) for i in range(50))
            finally:
                for s in socks:
                    s.close()


def test_replies_from_one_worker_thread_keep_their_order(S):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        def handler(conn, f):
            pool.submit(conn.send, f)
            return None

        with serving(S, handler, framing=S.LengthPrefix()) as (server, addr), connect(addr) as c:
            c.sendall(frames(*[b"%d" % i for i in range(500)]))
            assert read_frames(c, 500) == [b"%d" % i for i in range(500)]


def test_cross_thread_send_write_close_are_applied_in_call_order(S):
    rec = Recorder()
    box = {}

    def on_connect(conn):
        rec.on_connect(conn)

    with serving(S, lambda conn, f: f, framing=S.LengthPrefix(), on_connect=on_connect, on_close=rec.on_close) as (
            server, addr):
        with connect(addr) as c:
            c.sendall(frame(b"hello"))
            assert read_frame(c) == b"hello"
            conn = rec.connected[0]
            payload = bytearray(b"first")
            conn.send(payload)
            payload[:] = b"XXXXX"  # copied before send() returned
            conn.write(b"|raw|")
            conn.send(memoryview(b"third"))
            conn.close()
            assert conn.closed  # at once, from this thread too
            with pytest.raises(BrokenPipeError):
                conn.send(b"after close")
            with pytest.raises(BrokenPipeError):
                conn.write(b"after close")
            conn.close()  # idempotent
            assert read_frame(c) == b"first"
            assert recv_exact(c, 5) == b"|raw|"
            assert read_frame(c) == b"third"
            assert is_eof(c)
            box["ok"] = True
        wait_until(rec.closes, what="on_close")
        assert rec.closes()[0][1] is None


def test_cross_thread_errors_raise_what_is_known_and_log_the_rest(S, caplog):
    rec = Recorder()
    entered = threading.Event()
    release = threading.Event()

    def handler(conn, f):
        if f == b"wait":
            entered.set()
            release.wait(WAIT)  # the loop is busy: calls queue up meanwhile
            conn.abort()  # ... and this closes the connection before they run
        return None

    with serving(S, handler, framing=S.LengthPrefix(max_size=100), on_connect=rec.on_connect,
                 on_close=rec.on_close) as (server, addr):
        with connect(addr) as c:
            wait_until(lambda: rec.connected, what="the connection")
            conn = rec.connected[0]
            with pytest.raises(FrameTooLarge):
                conn.send(b"x" * 101)  # the framing refuses it here, in the caller's thread
            with pytest.raises(TypeError):
                conn.send("text")
            with pytest.raises(TypeError):
                conn.write(12)
            c.sendall(frame(b"wait"))
            assert entered.wait(WAIT)
            conn.send(b"too late")  # accepted: the connection is open as far as anyone knows
            release.set()
            assert is_eof(c)
        wait_until(rec.closes, what="on_close")
        wait_until(lambda: any("dropped" in r.getMessage() for r in caplog.records if r.name == "fastsock.server"),
                   what="the late failure logged")


def test_cross_thread_send_to_a_connection_known_closed_raises(S):
    rec = Recorder()
    with serving(S, lambda conn, f: f, framing=S.LengthPrefix(), on_connect=rec.on_connect,
                 on_close=rec.on_close) as (server, addr):
        with connect(addr):
            wait_until(lambda: rec.connected, what="the connection")
        wait_until(rec.closes, what="on_close")
        conn = rec.connected[0]
        with pytest.raises(BrokenPipeError):
            conn.send(b"x")
        with pytest.raises(BrokenPipeError):
            conn.write(b"x")
        conn.close()
        conn.abort()  # no-ops


def test_call_soon_threadsafe_order_thread_and_errors(S, caplog):
    seen = []
    loop_threads = set()

    def record(tag, i):
        loop_threads.add(threading.get_ident())
        seen.append((tag, i))

    server = S.Server(lambda conn, f: f, framing=S.LengthPrefix())
    server.call_soon_threadsafe(record, "early", 0)  # before serve_forever: runs at its start
    with pytest.raises(TypeError):
        server.call_soon_threadsafe("not callable")
    with Running(server):
        def producer(tag):
            for i in range(200):
                server.call_soon_threadsafe(record, tag, i)
                if i == 100:
                    server.call_soon_threadsafe(lambda: 1 / 0)

        threads = [threading.Thread(target=producer, args=(t,)) for t in "abc"]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        wait_until(lambda: len(seen) == 601, what="every call")
    server.close()
    assert seen[0] == ("early", 0)
    for tag in "abc":
        assert [i for t, i in seen if t == tag] == list(range(200))
    assert len(loop_threads) == 1 and threading.get_ident() not in loop_threads
    errors = [r for r in caplog.records if r.name == "fastsock.server" and r.levelno == logging.ERROR]
    assert len(errors) == 3 and all(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in errors)


def test_cross_thread_pause_and_resume(S):
    rec = Recorder()
    with serving(S, lambda conn, f: f, framing=S.LengthPrefix(), on_connect=rec.on_connect) as (server, addr):
        with connect(addr) as c:
            wait_until(lambda: rec.connected, what="the connection")
            conn = rec.connected[0]
            conn.pause_reading()
            time.sleep(0.1)
            c.sendall(frames(b"1", b"2"))
            time.sleep(0.2)
            assert server.stats()["frames_in"] == 0
            conn.resume_reading()
            assert read_frames(c, 2) == [b"1", b"2"]


def test_stats_from_another_thread_under_load(S):
    with serving(S, lambda conn, f: f, framing=S.LengthPrefix()) as (server, addr):
        stop = threading.Event()
        snapshots = []

        def watch():
            while not stop.is_set():
                snapshots.append(server.stats())
                time.sleep(0.001)

        w = threading.Thread(target=watch)
        w.start()
        try:
            with connect(addr) as c:
                for _ in range(20):
                    c.sendall(frames(*[b"z"] * 50))
                    read_frames(c, 50)
        finally:
            stop.set()
            w.join(WAIT)
        ins = [s["frames_in"] for s in snapshots]
        assert ins == sorted(ins) and all(s["running"] for s in snapshots)


def test_listen_address_reported_before_the_loop_registers_it(S):
    server = S.Server(lambda conn, f: f, framing=S.LengthPrefix())
    with Running(server):
        addrs = [server.listen(LOCAL) for _ in range(3)]
        for a in addrs:
            with connect(a) as c:
                c.sendall(frame(b"n"))
                assert read_frame(c) == b"n"
    server.close()


def test_connection_state_read_from_another_thread_while_traffic_flows(S):
    # pending / fileno / closed / repr / peer / sockname from a thread that is not the loop's,
    # while connections come, talk and go (C slots reused under kept objects): sane values.
    rec = Recorder()
    with serving(S, lambda conn, f: f * 64, framing=S.LengthPrefix(), on_connect=rec.on_connect,
                 on_close=rec.on_close) as (server, addr):
        stop = threading.Event()
        problems = []
        reads = [0]

        def watch():
            deadline = time.monotonic() + WAIT
            while not stop.is_set() and time.monotonic() < deadline:
                with rec.lock:
                    conns = list(rec.connected)
                    closed = {id(conn) for conn, _ in rec.closed}
                for conn in conns:
                    was_closed = id(conn) in closed
                    pending, fd, is_closed, text = conn.pending, conn.fileno(), conn.closed, repr(conn)
                    peer, sockname = conn.peer, conn.sockname
                    reads[0] += 1
                    if not (isinstance(pending, int) and 0 <= pending <= 64 * 1024 * 1024):
                        problems.append(("pending", pending))
                    if not (isinstance(fd, int) and fd >= -1):
                        problems.append(("fileno", fd))
                    if was_closed and (fd != -1 or not is_closed or pending != 0):
                        problems.append(("closed", fd, is_closed, pending))
                    if not text.startswith("<fastsock.Connection peer="):
                        problems.append(("repr", text))
                    if peer[0] != "127.0.0.1" or tuple(sockname[:2]) != tuple(addr[:2]):
                        problems.append(("addresses", peer, sockname))
                time.sleep(0.0005)

        w = threading.Thread(target=watch)
        w.start()
        try:
            for round_ in range(30):
                socks = [connect(addr) for _ in range(3)]
                try:
                    for s in socks:
                        s.sendall(frames(*[b"%02d" % round_] * 20))
                    for s in socks:
                        assert read_frames(s, 20) == [b"%02d" % round_ * 64] * 20
                finally:
                    for s in socks:
                        s.close()
            wait_until(lambda: len(rec.closes()) == 90, what="every close")
        finally:
            stop.set()
            w.join(WAIT)
        assert not w.is_alive() and reads[0] > 0
        assert not problems, problems[:5]
