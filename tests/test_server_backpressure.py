"""Backpressure on both backends: a client that does not read is paused with bounded memory
while the others are served, write_limit refuses, pause_reading/resume_reading hold and
deliver frames."""

from __future__ import annotations

import socket as stdsocket
import threading
import time

import pytest
from serverutil import (
    WAIT,
    Recorder,
    connect,
    frame,
    frames,
    read_frame,
    read_frames,
    recv_exact,
    serving,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

REPLY = 64 * 1024


@pytest.fixture
def S(impl):
    return impl


def test_a_client_that_does_not_read_is_paused_with_bounded_memory(S):
    rec = Recorder()
    high = 256 * 1024
    count = 1000  # 1,000 requests asking for 64 KiB each: 64 MiB of replies

    def handler(conn, f):
        if f.startswith(b"big"):
            return f.ljust(REPLY, b".")
        return f

    with serving(S, handler, framing=S.LengthPrefix(), high_water=high, on_connect=rec.on_connect) as (server,
                                                                                                       addr):
        lazy = connect(addr)
        lazy.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, 65536)
        lazy.sendall(frames(*[b"big%04d" % i for i in range(count)]))
        wait_until(lambda: server.stats()["paused"] == 1, what="the lazy client paused")
        conn = rec.connected[0]
        # it stays paused, with its queue bounded, while another client is served
        with connect(addr) as busy:
            for i in range(50):
                busy.sendall(frame(b"q%d" % i))
                assert read_frame(busy) == b"q%d" % i
                assert conn.pending <= high + REPLY + 16, conn.pending
        stats = server.stats()
        assert stats["paused"] == 1
        assert stats["frames_in"] < 50 + count // 2  # the lazy one's frames wait, unread or held
        assert conn.pending > 0
        # it reads: every reply arrives, in order, and the pause ends
        replies = read_frames(lazy, count)
        assert [r[:7] for r in replies] == [b"big%04d" % i for i in range(count)]
        assert all(len(r) == REPLY for r in replies)
        wait_until(lambda: server.stats()["paused"] == 0, what="the pause to end")
        lazy.close()


def test_write_limit_refuses_and_queues_nothing(S):
    seen = {}

    def handler(conn, f):
        sent = 0
        try:
            while True:
                before = conn.pending
                conn.send(b"w" * 10000)
                sent += 1
        except BufferError as exc:
            seen.update(sent=sent, before=before, after=conn.pending, exc=exc)
        try:
            conn.write(b"x" * 300_000)
        except BufferError:
            seen["write"] = conn.pending
        return None

    with serving(S, handler, framing=S.LengthPrefix(), high_water=64 * 1024, write_limit=256 * 1024) as (server,
                                                                                                         addr):
        with connect(addr) as c:
            c.sendall(frame(b"go"))
            wait_until(lambda: "sent" in seen, what="the handler")
            got = recv_exact(c, seen["sent"] * 10004)
            assert got == frame(b"w" * 10000) * seen["sent"]
    assert seen["after"] == seen["before"] and seen["write"] == seen["before"]
    assert 20 <= seen["sent"] <= 26  # 256 KiB / 10,004 bytes


def test_pause_reading_holds_frames_and_resume_delivers_them_without_new_bytes(S):
    rec = Recorder()
    delivered = []

    def handler(conn, f):
        delivered.append(f)
        if f == b"pause":
            conn.pause_reading()
        return f

    with serving(S, handler, framing=S.LengthPrefix(), on_connect=rec.on_connect) as (server, addr):
        with connect(addr) as c:
            c.sendall(frames(b"a", b"pause", b"b", b"c"))
            assert read_frames(c, 2) == [b"a", b"pause"]
            c.sendall(frames(b"d", b"e"))
            time.sleep(0.3)
            assert delivered == [b"a", b"pause"]  # b and c are held, d and e unread
            conn = rec.connected[0]
            assert "paused" in repr(conn)
            conn.resume_reading()  # from another thread: applied at the loop's next turn
            assert read_frames(c, 4) == [b"b", b"c", b"d", b"e"]
            # a resume with only buffered frames and no new byte: nothing is sent after it
            c.sendall(frames(b"pause", b"f", b"g"))
            assert read_frame(c) == b"pause"
            time.sleep(0.2)
            server.call_soon_threadsafe(conn.resume_reading)
            assert read_frames(c, 2) == [b"f", b"g"]
    assert server.stats()["paused"] == 0  # pause_reading is not backpressure


def test_pause_and_resume_on_the_loop_thread_and_paused_is_not_counted_as_backpressure(S):
    rec = Recorder()

    def handler(conn, f):
        if f == b"p":
            conn.pause_reading()
            conn.pause_reading()
            threading.Timer(0.2, conn.resume_reading).start()
        return f

    with serving(S, handler, framing=S.LengthPrefix(), on_connect=rec.on_connect) as (server, addr):
        with connect(addr) as c:
            c.sendall(frames(b"p", b"1", b"p", b"2"))
            assert read_frames(c, 4) == [b"p", b"1", b"p", b"2"]
            assert server.stats()["paused"] == 0


def test_backpressure_in_raw_mode(S):
    rec = Recorder()

    def handler(conn, data):  # one byte per call, 1,000 bytes of reply each: called again and again
        conn.write(b"r" * 1000)
        return 1

    with serving(S, handler, high_water=100_000, on_connect=rec.on_connect) as (server, addr):
        c = connect(addr)
        c.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, 65536)
        total = 0
        for _ in range(40):
            c.sendall(b"x" * 500)  # 500 KB of replies per send
            total += 500
        wait_until(lambda: server.stats()["paused"] == 1, what="backpressure")
        conn = rec.connected[0]
        assert conn.pending <= 100_000 + 1000
        assert recv_exact(c, total * 1000) == b"r" * (total * 1000)
        wait_until(lambda: server.stats()["paused"] == 0, what="the end of the pause")
        c.close()


def test_slow_reader_gets_every_reply_intact(S):
    with serving(S, lambda conn, f: f * 1000, framing=S.LengthPrefix(), high_water=32 * 1024, low_water=1024) as (
            server, addr), connect(addr) as c:
        c.sendall(frames(*[b"%03d" % i for i in range(300)]))
        deadline = time.monotonic() + WAIT
        for i in range(300):
            assert read_frame(c) == b"%03d" % i * 1000
            if i % 50 == 0:
                time.sleep(0.05)
            assert time.monotonic() < deadline


@pytest.mark.parametrize("make", [lambda S: S.LengthPrefix(2), lambda S: S.Varint(), lambda S: S.Delimiter(b"\r\n"),
                                  lambda S: S.Netstring()], ids=["LengthPrefix", "Varint", "Delimiter", "Netstring"])
@pytest.mark.parametrize("batch", [False, True], ids=["per-frame", "batch"])
def test_pause_part_way_through_a_read_in_every_framing(S, make, batch):
    """Frames after the one that paused (or after the batch) stay held, then come in order."""
    framing = make(S)
    seen = []

    def handler(conn, got):
        items = got if batch else [got]
        seen.extend(items)
        if b"pause" in items:
            conn.pause_reading()
            threading.Timer(0.2, conn.resume_reading).start()
        replies = [b"<" + f + b">" for f in items]
        return replies if batch else replies[0]

    with serving(S, handler, framing=framing, batch=batch) as (server, addr):
        with connect(addr) as c:
            first = [b"a", b"pause", b"b", b"c"]
            c.sendall(b"".join(framing.encode(f) for f in first))
            wire = b"".join(framing.encode(b"<" + f + b">") for f in first)
            assert recv_exact(c, len(wire)) == wire
            c.sendall(b"".join(framing.encode(f) for f in [b"d", b"pause"]) + framing.encode(b"e")[:2])
            c.sendall(framing.encode(b"e")[2:])
            wire = b"".join(framing.encode(b"<" + f + b">") for f in [b"d", b"pause", b"e"])
            assert recv_exact(c, len(wire)) == wire
    assert seen == [b"a", b"pause", b"b", b"c", b"d", b"pause", b"e"]


@pytest.mark.parametrize("how", ["pause_reading", "backpressure"])
def test_frames_held_by_a_pause_are_all_delivered_before_an_eof_already_waiting(S, how):
    # Complete frames held while the connection is paused, and the peer's EOF waiting in the
    # kernel when reading resumes: every held frame is delivered (and answered) before the
    # close is reported, which is a clean one (not an IncompleteReadError).
    rec = Recorder()
    got = []
    big = 8 << 20  # far above what the socket buffers hold: backpressure until the client reads
    count = 20

    def handler(conn, f):
        got.append(f)
        if f == b"hold":
            if how == "pause_reading":
                conn.pause_reading()
                return b"ok"
            return b"x" * big
        return f

    with serving(S, handler, framing=S.LengthPrefix(), high_water=64 * 1024, on_connect=rec.on_connect,
                 on_close=rec.on_close) as (server, addr):
        c = stdsocket.socket(stdsocket.AF_INET, stdsocket.SOCK_STREAM)
        try:
            c.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, 4096)
            c.settimeout(WAIT)
            c.connect(addr)
            # one read holds "hold" and the frames after it: those are held complete
            c.sendall(frame(b"hold") + frames(*[b"%03d" % i for i in range(count)]))
            if how == "pause_reading":
                assert read_frame(c) == b"ok"
            else:
                wait_until(lambda: server.stats()["paused"] == 1, what="the backpressure")
            c.shutdown(stdsocket.SHUT_WR)  # the EOF waits in the kernel behind nothing
            time.sleep(0.2)  # let it arrive (not a timing assertion)
            assert got == [b"hold"]
            if how == "pause_reading":
                rec.connected[0].resume_reading()  # from another thread
            else:
                assert recv_exact(c, 4 + big)[4:] == b"x" * big
            assert read_frames(c, count) == [b"%03d" % i for i in range(count)]
            wait_until(lambda: rec.closes(), what="the close")
        finally:
            c.close()
    assert got == [b"hold"] + [b"%03d" % i for i in range(count)]
    assert [exc for _, exc in rec.closes()] == [None]
