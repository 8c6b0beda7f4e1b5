"""Stopping on both backends: stop() under load answers every frame received, the grace
period, stop before serving, and SIGTERM / SIGINT (Ctrl-C) in a child process running
serve_forever in its main thread."""

from __future__ import annotations

import signal
import socket as stdsocket
import threading
import time

import pytest
from serverutil import (
    LOCAL,
    WAIT,
    Child,
    Recorder,
    Running,
    connect,
    frame,
    frames,
    is_eof,
    read_frame,
    serving,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def S(impl):
    return impl


def _count(conn, f):
    conn.data = (conn.data or 0) + 1
    return f


def test_stop_under_load_answers_every_frame_received(S):
    rec = Recorder()
    server = S.Server(_count, framing=S.LengthPrefix(), on_close=rec.on_close)
    addr = server.listen(LOCAL)
    run = Running(server)
    results = {}
    go = threading.Event()

    def client(k):
        s = connect(addr)
        port = s.getsockname()[1]
        got = 0
        sent = 0
        buf = b""
        try:
            while True:
                burst = frames(*[b"%d-%d" % (k, sent + j) for j in range(10)])
                try:
                    s.sendall(burst)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += 10
                if sent >= 30:
                    go.set()
                eof = False
                while got < sent:  # read this burst's replies, or up to EOF
                    data = s.recv(65536)
                    if not data:
                        eof = True
                        break
                    buf += data
                    while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
                        n = int.from_bytes(buf[:4], "big")
                        assert buf[4:4 + n] == b"%d-%d" % (k, got)  # in order, intact
                        buf = buf[4 + n:]
                        got += 1
                if eof:
                    break
        except ConnectionResetError:
            pass
        finally:
            s.close()
        results[port] = got

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(20)]
    for t in threads:
        t.start()
    try:
        assert go.wait(WAIT)
        time.sleep(0.2)
        started = time.monotonic()
        server.stop(grace=WAIT)
        run.join()
        assert time.monotonic() - started < WAIT  # returned when the connections were done
    finally:
        for t in threads:
            t.join(WAIT)
        server.close()
    assert not any(t.is_alive() for t in threads)
    closes = rec.closes()
    assert len(closes) == 20 and all(exc is None for _, exc in closes)
    delivered = {conn.peer[1]: conn.data or 0 for conn, _ in closes}
    assert delivered == results  # every frame the server received was answered
    stats = server.stats()
    assert stats["frames_in"] == stats["frames_out"] == sum(results.values())
    assert stats["listeners"] == 0 and stats["connections"] == 0


def test_stop_answers_frames_the_kernel_holds(S):
    """Frames sent before stop() but not read yet are read (until would-block) and answered."""
    rec = Recorder()
    gate = threading.Event()
    entered = threading.Event()

    def handler(conn, f):
        if f == b"block":
            entered.set()
            gate.wait(WAIT)  # keeps the loop busy while the client sends more
        return f

    with serving(S, handler, framing=S.LengthPrefix(), on_close=rec.on_close) as (server, addr), connect(addr) as c:
        c.sendall(frame(b"block"))
        assert entered.wait(WAIT)
        c.sendall(frames(*[b"k%d" % i for i in range(100)]))
        server.stop(grace=WAIT)
        gate.set()
        assert read_frame(c) == b"block"
        for i in range(100):
            assert read_frame(c) == b"k%d" % i
        assert is_eof(c)  # then the half-close
    assert rec.closes()[0][1] is None


def test_stop_before_serve_forever_returns_at_once_and_closes_listeners(S):
    server = S.Server(_count, framing=S.LengthPrefix())
    server.listen(LOCAL)
    server.stop()
    server.stop()  # idempotent
    t = threading.Thread(target=server.serve_forever)
    t.start()
    t.join(WAIT)
    assert not t.is_alive()
    assert server.stats()["listeners"] == 0 and server.addresses == []
    addr = server.listen(LOCAL)  # and it can serve again
    with Running(server), connect(addr) as c:
        c.sendall(frame(b"x"))
        assert read_frame(c) == b"x"
    server.close()


def test_grace_period_aborts_what_remains(S):
    rec = Recorder()
    with serving(S, lambda conn, f: f * 100_000 if f == b"big" else f, framing=S.LengthPrefix(),
                 high_water=64 * 1024, on_close=rec.on_close) as (server, addr):
        quiet = connect(addr)  # reads the EOF but never closes
        lazy = connect(addr)  # never reads: its replies cannot leave
        ports = {quiet.getsockname()[1]: "quiet", lazy.getsockname()[1]: "lazy"}
        quiet.sendall(frame(b"q"))
        assert read_frame(quiet) == b"q"
        lazy.sendall(frames(*[b"big"] * 50))
        wait_until(lambda: server.stats()["paused"] == 1, what="backpressure")
        t0 = time.monotonic()
        server.stop(grace=1.0)
        assert is_eof(quiet)
        wait_until(lambda: len(rec.closes()) == 2, what="both aborted at the end of the grace")
        assert time.monotonic() - t0 >= 0.9
        wait_until(lambda: not server.stats()["running"], what="the loop to end")
        quiet.close()
        lazy.close()
    excs = {ports[conn.peer[1]]: exc for conn, exc in rec.closes()}
    assert excs["quiet"] is None  # half-closed, every reply delivered: nothing was lost
    assert type(excs["lazy"]) is TimeoutError  # its replies were still queued


def test_a_later_stop_shortens_the_grace(S):
    with serving(S, _count, framing=S.LengthPrefix()) as (server, addr):
        c = connect(addr)
        c.sendall(frame(b"x"))
        assert read_frame(c) == b"x"
        server.stop(grace=WAIT * 10)
        server.stop(grace=0.2)  # the client never closes: this is what ends it
        wait_until(lambda: not server.stats()["running"], what="the loop to end")
        c.close()


def test_serve_forever_in_a_thread_leaves_signal_handlers_alone(S):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with serving(S, _count, framing=S.LengthPrefix()):
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# ---- SIGTERM and Ctrl-C in a child's main thread ----------------------------------------

SIGNAL_SERVER = """
    import signal, sys, threading
    import fastsock
    import fastsock._serverbase as sb
    sb.DEFAULT_GRACE = float(sys.argv[1])   # what a signal's graceful stop waits at most
    def handler(conn, f):
        if f == b"kill-from-a-thread":
            # SIGINT delivered to another thread: the main thread waits in the loop and
            # must be woken (set_wakeup_fd) to run the Python handler
            threading.Thread(target=signal.pthread_kill,
                             args=(threading.get_ident(), signal.SIGINT)).start()
        return f
    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    server = fastsock.Server(handler, framing=fastsock.LengthPrefix(4))
    print("PORT", server.listen(("127.0.0.1", 0))[1], flush=True)
    server.serve_forever()
    restored = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == previous
    print("STOPPED", server.stats()["connections"], server.stats()["frames_in"], restored,
          signal.set_wakeup_fd(-1), flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_serve_forever_gracefully(S, signum):
    with Child(S, SIGNAL_SERVER, "60") as child:
        port = int(child.line("PORT").split()[1])
        with connect(("127.0.0.1", port)) as c:
            c.sendall(frame(b"before"))
            assert read_frame(c) == b"before"
            child.signal(signum)
            assert is_eof(c)  # half-closed; our close lets it finish
        assert child.wait() == 0
        assert child.line("STOPPED").split()[1:] == ["0", "1", "True", "-1"]
        assert "Traceback" not in child.stderr()


def test_signal_stop_uses_the_default_grace_as_it_is_when_the_signal_comes(S):
    # DEFAULT_GRACE set at run time (0.5 s) bounds a signal's graceful stop on both backends:
    # a client that never closes is aborted after it, not after the 5 s of the class default.
    with Child(S, SIGNAL_SERVER, "0.5") as child:
        port = int(child.line("PORT").split()[1])
        with connect(("127.0.0.1", port)) as c:
            c.sendall(frame(b"x"))
            assert read_frame(c) == b"x"
            start = time.monotonic()
            child.signal(signal.SIGTERM)
            assert is_eof(c)  # the graceful stop began (half-close); we never close
            assert child.wait() == 0
            assert 0.4 < time.monotonic() - start < 4.0  # the 0.5 s grace; the old default was 5 s
        assert child.line("STOPPED").split()[1:] == ["0", "1", "True", "-1"]
        assert "Traceback" not in child.stderr()


def test_ctrl_c_while_idle_in_the_wait(S):
    with Child(S, SIGNAL_SERVER, "60") as child:
        child.line("PORT")
        time.sleep(0.3)  # waiting in epoll/poll (in C for the compiled backend)
        child.signal(signal.SIGINT)
        assert child.wait() == 0
        assert child.line("STOPPED").split()[1:] == ["0", "0", "True", "-1"]


def test_sigint_delivered_to_another_thread_wakes_the_loop(S):
    with Child(S, SIGNAL_SERVER, "60") as child:
        port = int(child.line("PORT").split()[1])
        with connect(("127.0.0.1", port)) as c:
            c.sendall(frame(b"kill-from-a-thread"))
            assert read_frame(c) == b"kill-from-a-thread"
            assert is_eof(c)
        assert child.wait() == 0
        assert child.line("STOPPED").split()[1:] == ["0", "1", "True", "-1"]


def test_second_sigint_during_the_grace_aborts(S):
    with Child(S, SIGNAL_SERVER, "600") as child:  # a graceful stop could take 10 minutes
        port = int(child.line("PORT").split()[1])
        c = connect(("127.0.0.1", port))  # never closes: the graceful stop waits for it
        try:
            c.sendall(frame(b"x"))
            assert read_frame(c) == b"x"
            child.signal(signal.SIGINT)
            assert is_eof(c)  # the graceful stop began (half-close)
            time.sleep(0.2)
            with pytest.raises(AssertionError):
                child.wait(timeout=1.0)  # still in its grace period
            child.signal(signal.SIGINT)
            assert child.wait() == 0  # well before 600 s
            assert child.line("STOPPED").split()[1:] == ["0", "1", "True", "-1"]
        finally:
            c.close()


def test_sigterm_twice_does_not_abort(S):
    with Child(S, SIGNAL_SERVER, "600") as child:
        port = int(child.line("PORT").split()[1])
        c = connect(("127.0.0.1", port))
        try:
            c.sendall(frame(b"x"))
            assert read_frame(c) == b"x"
            child.signal(signal.SIGTERM)
            assert is_eof(c)
            child.signal(signal.SIGTERM)
            with pytest.raises(AssertionError):
                child.wait(timeout=1.0)  # still waiting for our connection
        finally:
            c.close()  # the peer's EOF completes the stop
        assert child.wait() == 0
        assert child.line("STOPPED").split()[1:] == ["0", "1", "True", "-1"]


def test_stop_closes_an_unread_half_closed_peer_after_its_eof(S):
    rec = Recorder()
    with serving(S, _count, framing=S.LengthPrefix(), on_close=rec.on_close) as (server, addr):
        c = connect(addr)
        c.sendall(frame(b"a"))
        assert read_frame(c) == b"a"
        server.stop(grace=WAIT)
        assert is_eof(c)
        c.sendall(b"ignored after the half-close")  # read and discarded
        time.sleep(0.1)
        assert server.stats()["running"]
        c.shutdown(stdsocket.SHUT_WR)
        wait_until(lambda: not server.stats()["running"], what="the loop to end")
        c.close()
    assert rec.closes()[0][1] is None


def test_send_and_write_from_another_thread_after_the_stop_half_closed_raise(S):
    # A stop's half-close makes the connection closed for send/write/closed on every thread,
    # as the compiled backend has it: a reply could never reach the peer.
    rec = Recorder()
    server = S.Server(lambda conn, f: f, framing=S.LengthPrefix(), on_connect=rec.on_connect,
                      on_close=rec.on_close)
    addr = server.listen(LOCAL)
    with Running(server) as running, connect(addr) as c:
        c.sendall(frame(b"a"))
        assert read_frame(c) == b"a"
        conn = rec.connected[0]
        server.stop(WAIT)
        assert c.recv(100) == b""  # the half-close: our side is still open
        wait_until(lambda: conn.closed, what="closed after the half-close")
        with pytest.raises(BrokenPipeError):
            conn.send(b"late")
        with pytest.raises(BrokenPipeError):
            conn.write(b"late")
        assert "closing" in repr(conn)
        c.close()
        running.join()
    assert [exc for _, exc in rec.closes()] == [None]
