"""Hostile peers and failing handlers on both backends: the offending connection is closed,
never the server; nothing is allocated for an announced size."""

from __future__ import annotations

import logging
import socket as stdsocket
import struct
import time

import pytest
from serverutil import (
    LOCAL,
    WAIT,
    Recorder,
    Running,
    connect,
    echo,
    frame,
    frames,
    is_eof,
    read_frame,
    read_frames,
    recv_exact,
    serving,
    wait_until,
)

from fastsock import FrameTooLarge, FramingError, IncompleteReadError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def S(impl):
    return impl


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")  # pragma: no cover


def _server_errors(caplog):
    return [r for r in caplog.records if r.name == "fastsock.server" and r.levelno >= logging.ERROR]


# ---- hostile frames ---------------------------------------------------------------------


def test_4gib_length_prefix_closes_only_that_connection(S):
    rec = Recorder()
    with serving(S, echo, framing=S.LengthPrefix(4), on_close=rec.on_close) as (server, addr):
        with connect(addr) as good, connect(addr) as bad:
            good.sendall(frame(b"before"))
            assert read_frame(good) == b"before"
            bad.sendall(frame(b"ok") + b"\xff\xff\xff\xff" + b"junk")
            assert read_frame(bad) == b"ok"  # the reply to the frame before it still leaves
            assert is_eof(bad)
            good.sendall(frame(b"after"))
            assert read_frame(good) == b"after"
        wait_until(lambda: len(rec.closes()) == 2, what="both closed")
    exc = next(e for _, e in rec.closes() if e is not None)
    assert isinstance(exc, FrameTooLarge) and exc.size == 0xFFFFFFFF and exc.limit == 16 * 1024 * 1024
    assert server.stats()["errors"] == 1


def test_an_announced_size_within_max_size_costs_only_what_arrives(S):
    rec = Recorder()
    framing = S.LengthPrefix(8, max_size=1 << 40)  # a 4 GiB frame is allowed ...
    with serving(S, echo, framing=framing, on_close=rec.on_close) as (server, addr):
        before = _rss()
        with connect(addr) as c:
            c.sendall(struct.pack(">Q", 4 << 30) + b"x" * 1000)  # ... but only 1,000 bytes come
            wait_until(lambda: server.stats()["bytes_in"] == 1008, what="the bytes read")
            time.sleep(0.1)
            assert _rss() - before < 64 << 20  # nothing reserved for the announced 4 GiB
            assert server.stats()["connections"] == 1
        wait_until(rec.closes, what="on_close")
    exc = rec.closes()[0][1]
    assert isinstance(exc, IncompleteReadError) and exc.expected == (4 << 30) + 8 and len(exc.partial) == 1008


def test_framing_error_closes_only_that_connection(S):
    rec = Recorder()
    with serving(S, echo, framing=S.Netstring(), on_close=rec.on_close) as (server, addr):
        with connect(addr) as good, connect(addr) as bad:
            bad.sendall(b"3:abc,3:xyz!")  # the second netstring lacks its comma
            assert recv_exact(bad, 6) == b"3:abc,"
            assert is_eof(bad)
            good.sendall(b"2:ok,")
            assert recv_exact(good, 5) == b"2:ok,"
        wait_until(lambda: len(rec.closes()) == 2, what="both closed")
    assert any(isinstance(e, FramingError) for _, e in rec.closes())
    assert server.stats()["errors"] == 1


def test_non_digit_ascii_length_is_a_framing_error(S):
    rec = Recorder()
    with serving(S, echo, framing=S.AsciiLength(5), on_close=rec.on_close) as (server, addr):
        with connect(addr) as c:
            c.sendall(b"12x45")
            assert is_eof(c)
        wait_until(rec.closes, what="on_close")
    assert isinstance(rec.closes()[0][1], FramingError)


def test_a_flood_of_tiny_frames(S):
    with serving(S, lambda conn, f: None if f else b"!", framing=S.LengthPrefix()) as (server, addr):
        with connect(addr) as c:
            c.sendall(frame(b"x") * 100_000 + frame(b""))  # 500 KB of frames, then one that answers
            assert read_frame(c) == b"!"
        assert server.stats()["frames_in"] == 100_001


def test_connections_reset_right_after_connecting_do_not_hurt(S):
    with serving(S, echo, framing=S.LengthPrefix()) as (server, addr):
        for _ in range(100):
            s = stdsocket.socket()
            s.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
            s.connect(addr)
            s.close()  # RST, maybe before accept()
        with connect(addr) as c:
            c.sendall(frame(b"fine"))
            assert read_frame(c) == b"fine"
        wait_until(lambda: server.stats()["connections"] == 0, what="the resets noticed")


# ---- failing handlers and hooks -------------------------------------------------------


def test_handler_exception_is_logged_and_closes_only_that_connection(S, caplog):
    rec = Recorder()

    def handler(conn, f):
        if f == b"boom":
            raise KeyError("boom")
        return f

    with serving(S, handler, framing=S.LengthPrefix(), on_close=rec.on_close) as (server, addr):
        with connect(addr) as good, connect(addr) as bad:
            bad.sendall(frames(b"first", b"boom", b"never"))
            assert read_frame(bad) == b"first"  # queued before the error: flushed
            assert is_eof(bad)
            good.sendall(frame(b"still served"))
            assert read_frame(good) == b"still served"
        wait_until(lambda: len(rec.closes()) == 2, what="both closed")
    errors = _server_errors(caplog)
    assert len(errors) == 1 and errors[0].exc_info[0] is KeyError and "handler" in errors[0].getMessage()
    assert [type(e) for _, e in rec.closes() if e is not None] == [KeyError]
    assert server.stats()["errors"] == 1


def test_on_error_keeps_the_connection_open(S, caplog):
    got = []

    def handler(conn, f):
        if f.startswith(b"bad"):
            raise ValueError(f)
        return f

    def on_error(conn, exc):
        got.append(exc)
        conn.send(b"error: " + exc.args[0])

    with serving(S, handler, framing=S.LengthPrefix(), on_error=on_error) as (server, addr), connect(addr) as c:
        c.sendall(frames(b"a", b"bad1", b"b", b"bad2", b"c"))
        assert read_frames(c, 5) == [b"a", b"error: bad1", b"b", b"error: bad2", b"c"]
    assert [e.args[0] for e in got] == [b"bad1", b"bad2"]
    assert not _server_errors(caplog)
    assert server.stats()["errors"] == 2  # counted whether handled or not


def test_on_error_that_raises_takes_the_default_path(S, caplog):
    rec = Recorder()

    def on_error(conn, exc):
        raise RuntimeError("on_error failed too")

    with serving(S, lambda conn, f: 1 / 0, framing=S.LengthPrefix(), on_error=on_error,
                 on_close=rec.on_close) as (server, addr):
        with connect(addr) as c:
            c.sendall(frame(b"x"))
            assert is_eof(c)
        wait_until(rec.closes, what="on_close")
    assert isinstance(rec.closes()[0][1], RuntimeError)
    assert len(_server_errors(caplog)) == 1


def test_on_error_may_close(S):
    rec = Recorder()
    with serving(S, lambda conn, f: 1 / 0, framing=S.LengthPrefix(), on_error=lambda conn, exc: conn.close(),
                 on_close=rec.on_close) as (server, addr):
        with connect(addr) as c:
            c.sendall(frames(b"x", b"y"))
            assert is_eof(c)
        wait_until(rec.closes, what="on_close")
    assert rec.closes()[0][1] is None
    assert server.stats()["frames_in"] == 1  # nothing delivered after close()


def test_hook_exceptions_are_logged_and_close_the_connection(S, caplog):
    closes = []

    def on_connect(conn):
        if len(closes) == 0 and not getattr(on_connect, "done", False):
            on_connect.done = True
            raise OSError("on_connect failed")

    def on_close(conn, exc):
        closes.append(exc)
        raise LookupError("on_close failed")

    with serving(S, echo, framing=S.LengthPrefix(), on_connect=on_connect, on_close=on_close) as (server, addr):
        with connect(addr) as first:
            assert is_eof(first)
        with connect(addr) as second:
            second.sendall(frame(b"ok"))
            assert read_frame(second) == b"ok"
        wait_until(lambda: len(closes) == 2, what="both on_close calls")
    assert isinstance(closes[0], OSError) and closes[1] is None
    names = sorted(r.getMessage().split()[0] for r in _server_errors(caplog))
    assert names == ["on_close", "on_close", "on_connect"]


@pytest.mark.parametrize("reply", ["text", 12, object(), [b"list"]], ids=["str", "int", "object", "list"])
def test_bad_reply_types_are_type_errors_on_the_error_path(S, reply):
    got = []
    with serving(S, lambda conn, f: reply, framing=S.LengthPrefix(), on_error=lambda c, e: got.append(e)) as (
            server, addr), connect(addr) as c:
        c.sendall(frame(b"x"))
        wait_until(lambda: got, what="on_error")
    assert isinstance(got[0], TypeError)


def test_reply_too_large_for_the_framing(S):
    got = []
    with serving(S, lambda conn, f: b"y" * 300, framing=S.LengthPrefix(1), on_error=lambda c, e: got.append(e)) as (
            server, addr), connect(addr) as c:
        c.sendall(b"\x01x")
        wait_until(lambda: got, what="on_error")
    assert isinstance(got[0], FrameTooLarge)


@pytest.mark.parametrize("tail", ["too-large", "malformed"])
def test_batch_replies_leave_before_a_refused_frame_in_the_same_read_closes(S, tail):
    # Complete frames, then in the same read a frame the framing refuses: the batch handler
    # is called and its replies are sent, then the connection closes with the refusal (as
    # per frame). The compiled loop used to begin that close while collecting the batch, so
    # every reply was refused.
    closes, errors = [], []
    framing = S.LengthPrefix(max_size=100) if tail == "too-large" else S.AsciiLength(5, max_size=100)
    good = b"".join(framing.encode(p) for p in (b"a", b"b"))
    bad = struct.pack(">I", 1000) if tail == "too-large" else b"12x45"  # a header that is no number
    with serving(S, lambda conn, frames: [b"r:" + f for f in frames], framing=framing, batch=True,
                 on_close=lambda c, e: closes.append(e), on_error=lambda c, e: errors.append(e)) as (
            server, addr), connect(addr) as c:
        c.sendall(good + bad)
        got = b""
        while True:
            data = c.recv(4096)
            if not data:
                break
            got += data
        wait_until(lambda: closes, what="on_close")
        assert server.stats()["errors"] == 1
    assert got == b"".join(framing.encode(r) for r in (b"r:a", b"r:b"))
    assert errors == []
    assert type(closes[0]) is (FrameTooLarge if tail == "too-large" else FramingError)


def test_batch_handler_returning_bytes_is_a_type_error(S):
    got = []
    with serving(S, lambda conn, frames: b"not a list", framing=S.LengthPrefix(), batch=True,
                 on_error=lambda c, e: got.append(e)) as (server, addr), connect(addr) as c:
        c.sendall(frame(b"x"))
        wait_until(lambda: got, what="on_error")
    assert isinstance(got[0], TypeError)


@pytest.mark.parametrize("result, error", [(None, TypeError), (True, TypeError), (1.0, TypeError),
                                           (-1, ValueError), (10**6, ValueError)],
                         ids=["None", "bool", "float", "negative", "too-many"])
def test_raw_handler_bad_results(S, result, error):
    got = []
    with serving(S, lambda conn, data: result, on_error=lambda c, e: got.append(e)) as (server, addr):
        with connect(addr) as c:
            c.sendall(b"abc")
            wait_until(lambda: got, what="on_error")
    assert isinstance(got[0], error)


def test_server_keeps_serving_after_every_kind_of_failure(S):
    def handler(conn, f):
        if f == b"raise":
            raise Exception("x")
        if f == b"wrong":
            return 3.5
        return f

    with serving(S, handler, framing=S.LengthPrefix()) as (server, addr):
        for bad in (frame(b"raise"), frame(b"wrong"), b"\xff\xff\xff\xff"):
            with connect(addr) as c:
                c.sendall(bad)
                assert is_eof(c)
        with connect(addr) as c:
            c.sendall(frame(b"alive"))
            assert read_frame(c) == b"alive"
        assert server.stats()["errors"] == 3 and server.stats()["running"]


class Fatal(BaseException):
    pass


def test_a_base_exception_ends_serve_forever_and_aborts_connections(S):
    rec = Recorder()

    def handler(conn, f):
        if f == b"fatal":
            raise Fatal()
        return f

    server = S.Server(handler, framing=S.LengthPrefix(), on_close=rec.on_close)
    addr = server.listen(LOCAL)
    run = Running(server)
    with connect(addr) as other, connect(addr) as c:
        other.sendall(frame(b"o"))
        assert read_frame(other) == b"o"
        c.sendall(frame(b"fatal"))
        run.thread.join(WAIT)
        assert not run.thread.is_alive() and isinstance(run.error, Fatal)
        assert is_eof(other) and is_eof(c)
    assert len(rec.closes()) == 2 and all(isinstance(e, Fatal) for _, e in rec.closes())
    assert server.stats()["running"] is False and server.stats()["listeners"] == 1
    run.error = None
    server.close()


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("make", ["LengthPrefix", "Delimiter"])
def test_a_reply_returned_after_the_handler_closed_is_refused_on_the_error_path(S, make, batch):
    # Both backends: close() then a returned reply is BrokenPipeError on the error path
    # (on_error / errors counted); the close stays a clean one and the reply is not sent.
    rec = Recorder()
    seen = []
    framing = S.LengthPrefix() if make == "LengthPrefix" else S.Delimiter(b"\n")

    def handler(conn, f):
        conn.close()
        return [b"late"] if batch else b"late"

    def on_error(conn, exc):
        seen.append(exc)

    with serving(S, handler, framing=framing, batch=batch, on_error=on_error,
                 on_close=rec.on_close) as (server, addr), connect(addr) as c:
        c.sendall(frame(b"a") if make == "LengthPrefix" else b"a\n")
        assert c.recv(100) == b""  # EOF, no reply before it
        wait_until(lambda: rec.closes(), what="the close")
        assert len(seen) == 1 and isinstance(seen[0], BrokenPipeError), seen
        assert server.stats()["errors"] == 1 and server.stats()["frames_out"] == 0
    assert [exc for _, exc in rec.closes()] == [None]


def test_connections_kept_after_an_interrupted_abort_never_reach_the_next_run(S):
    # on_close raises a BaseException while serve_forever aborts its connections: the
    # Connection objects kept (whether their close was reported or not yet) act on nothing
    # when the server serves again and new connections take their places (C: their slots).
    rec = Recorder()
    interrupted = []

    def handler(conn, f):
        if f == b"fatal":
            raise Fatal()
        return f

    def on_close(conn, exc):
        rec.on_close(conn, exc)
        if not interrupted:
            interrupted.append(conn)
            raise Fatal()

    server = S.Server(handler, framing=S.LengthPrefix(), on_connect=rec.on_connect, on_close=on_close)
    addr = server.listen(LOCAL)
    try:
        run = Running(server)
        olds = [connect(addr) for _ in range(4)]
        try:
            for s in olds:
                s.sendall(frame(b"o"))
                assert read_frame(s) == b"o"
            olds[0].sendall(frame(b"fatal"))
            run.thread.join(WAIT)
            assert not run.thread.is_alive() and isinstance(run.error, Fatal)
            run.error = None
            stale = list(rec.connected)
            assert len(stale) == 4
            with Running(server) as again:
                news = [connect(addr) for _ in range(4)]
                try:
                    for s in news:
                        s.sendall(frame(b"n"))
                        assert read_frame(s) == b"n"
                    done = []

                    def on_loop():
                        for conn in stale:
                            for call in (conn.send, conn.write):
                                try:
                                    call(b"stale")
                                    done.append(("sent", conn))
                                except BrokenPipeError:
                                    pass
                            conn.pause_reading()
                            conn.close()
                            conn.abort()
                            done.append((conn.closed, conn.fileno(), conn.pending))
                    server.call_soon_threadsafe(on_loop)
                    wait_until(lambda: len(done) >= 4, what="the stale calls")
                    assert done == [(True, -1, 0)] * 4, done
                    for s in news:  # untouched: not paused, not closed, nothing foreign queued
                        s.sendall(frame(b"still"))
                        assert read_frame(s) == b"still"
                    assert all(not conn.closed for conn in rec.connected[4:])
                finally:
                    for s in news:
                        s.close()
                wait_until(lambda: len(rec.closes()) == 8, what="every close")
                again.stop()
        finally:
            for s in olds:
                s.close()
    finally:
        server.close()
    assert len({id(conn) for conn, _ in rec.closes()}) == 8  # each one reported once
