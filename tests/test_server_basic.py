"""Server basics on both backends: construction, listening, the three modes, hooks, the
Connection API, stats, and "every reply of one read leaves in one system call"."""

from __future__ import annotations

import errno
import socket as stdsocket
import threading
import time

import pytest
from serverutil import (
    LOCAL,
    WAIT,
    Clients,
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
from sockutil import has_ipv6_loopback
from streamutil import ALL_FRAMINGS

import fastsock._serverbase as sb
from fastsock import IncompleteReadError

pytestmark = pytest.mark.timeout(120)

@pytest.fixture
def S(impl):
    return impl


# ---- construction -----------------------------------------------------------------------


def test_public_names(S):
    for name in ("Server", "Connection", "serve", "IdleTimeout", "FrameTimeout"):
        assert name in S.__all__
    assert issubclass(S.IdleTimeout, TimeoutError) and issubclass(S.FrameTimeout, TimeoutError)
    for obj in (S.Server, S.Connection, S.serve, S.Server.listen, S.Server.serve_forever, S.Server.stop,
                S.Server.stats, S.Server.call_soon_threadsafe, S.Server.close, S.Connection.send,
                S.Connection.write, S.Connection.close, S.Connection.abort, S.Connection.pause_reading,
                S.Connection.resume_reading, S.Connection.fileno):
        assert (obj.__doc__ or "").strip(), obj


@pytest.mark.parametrize("kwargs, error", [
    (dict(handler=None), TypeError),
    (dict(handler=42), TypeError),
    (dict(framing=b"len"), TypeError),
    (dict(batch=1), TypeError),
    (dict(batch=True, framing=None), ValueError),
    (dict(on_connect=1), TypeError),
    (dict(on_close="x"), TypeError),
    (dict(on_error=3), TypeError),
    (dict(max_connections=0), ValueError),
    (dict(max_connections=1.5), TypeError),
    (dict(max_connections=True), TypeError),
    (dict(idle_timeout=0), ValueError),
    (dict(idle_timeout=-1), ValueError),
    (dict(idle_timeout=float("nan")), ValueError),
    (dict(idle_timeout="1"), TypeError),
    (dict(frame_timeout=float("inf")), ValueError),
    (dict(read_size=0), ValueError),
    (dict(read_size=1 << 20, max_buffer=1 << 10), ValueError),
    (dict(high_water=0), ValueError),
    (dict(high_water=100, low_water=200), ValueError),
    (dict(high_water=1 << 20, write_limit=1 << 10), ValueError),
    (dict(backlog=-1), ValueError),
    (dict(workers=0), ValueError),
    (dict(workers="2"), TypeError),
    (dict(reuse_port=1), TypeError),
])
def test_bad_options(S, kwargs, error):
    kwargs = dict(kwargs)  # the parametrize dict is shared by both backends' cases
    handler = kwargs.pop("handler", echo)
    kwargs.setdefault("framing", S.LengthPrefix(4))
    with pytest.raises(error):
        S.Server(handler, **kwargs)


def test_connection_is_not_instantiable(S):
    with pytest.raises(TypeError):
        S.Connection()


def test_stats_keys_and_values_before_serving(S):
    with S.Server(echo, framing=S.LengthPrefix()) as server:
        stats = server.stats()
        assert set(sb.STATS_KEYS) <= set(stats)
        assert stats["running"] is False
        assert all(stats[k] == 0 for k in sb.STATS_KEYS if k != "running")
        server.listen(LOCAL)
        assert server.stats()["listeners"] == 1


# ---- listening ----------------------------------------------------------------------------


def test_listen_variants(S, tmp_path):
    with S.Server(echo, framing=S.LengthPrefix()) as server:
        tcp = server.listen(LOCAL)
        assert tcp[0] == "127.0.0.1" and tcp[1] > 0
        path = str(tmp_path / "srv.sock")
        assert server.listen(path) == path
        raw = stdsocket.socket()
        raw.bind(LOCAL)
        raw.listen()
        adopted = server.listen(sock=raw)
        assert adopted == raw.getsockname()
        assert sorted(map(str, server.addresses)) == sorted(map(str, [tcp, path, adopted]))
        with Running(server):
            for address in (tcp, path, adopted):
                with connect(address) as c:
                    c.sendall(frame(b"hi"))
                    assert read_frame(c) == b"hi"


def test_listen_ipv6(S):
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this host")
    with serving(S, echo, ("::1", 0), framing=S.LengthPrefix()) as (server, addr):
        with stdsocket.create_connection(addr[:2], timeout=WAIT) as c:
            c.sendall(frame(b"v6"))
            assert read_frame(c) == b"v6"


def test_listen_errors(S, tmp_path):
    with S.Server(echo, framing=S.LengthPrefix()) as server:
        with pytest.raises(TypeError):
            server.listen()
        with stdsocket.socket() as spare, pytest.raises(TypeError):
            server.listen(LOCAL, sock=spare)
        with pytest.raises(TypeError):
            server.listen(sock="not a socket")
        with stdsocket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM) as udp, pytest.raises(ValueError):
            server.listen(sock=udp)
        with stdsocket.socket() as unlistened:
            unlistened.bind(LOCAL)
            with pytest.raises(ValueError):
                server.listen(sock=unlistened)
        path = tmp_path / "taken.sock"
        server.listen(str(path))
        with pytest.raises(OSError) as info:
            server.listen(str(path))  # never removes an existing socket file
        assert info.value.errno == errno.EADDRINUSE
        assert path.exists()


def test_listen_while_serving_from_another_thread(S):
    with serving(S, echo, framing=S.LengthPrefix()) as (server, first):
        second = server.listen(LOCAL)  # not the loop's thread: registered at its next turn
        with connect(second) as c:
            c.sendall(frame(b"late"))
            assert read_frame(c) == b"late"
        wait_until(lambda: server.stats()["listeners"] == 2, what="two listeners")


def test_empty_server_waits_and_listens_later_from_the_loop(S):
    server = S.Server(echo, framing=S.LengthPrefix())
    with Running(server):
        got = []
        server.call_soon_threadsafe(lambda: got.append(server.listen(LOCAL)))
        wait_until(lambda: got, what="listen() on the loop thread")
        with connect(got[0]) as c:
            c.sendall(frame(b"x"))
            assert read_frame(c) == b"x"


def test_serve_forever_twice_close_while_running_and_serving_again(S):
    server = S.Server(echo, framing=S.LengthPrefix())
    server.listen(LOCAL)
    run = Running(server)
    with pytest.raises(RuntimeError):
        server.serve_forever()
    with pytest.raises(RuntimeError):
        server.close()
    run.stop(grace=1)
    assert server.stats()["listeners"] == 0  # stop closed it; not reopened
    addr = server.listen(LOCAL)
    with Running(server), connect(addr) as c:
        c.sendall(frame(b"again"))
        assert read_frame(c) == b"again"
    with pytest.raises(RuntimeError):
        server.listen(LOCAL)  # closed for good
    server.close()  # idempotent


# ---- framed mode --------------------------------------------------------------------------


@pytest.mark.parametrize("name, make", ALL_FRAMINGS, ids=[n for n, _ in ALL_FRAMINGS])
def test_echo_every_framing(S, name, make):
    framing = make(S)
    payloads = [b"a", b"hello", b"x" * 200, b"0123456789" * 25]
    with serving(S, lambda conn, f: f[::-1], framing=framing) as (server, addr), connect(addr) as c:
        c.sendall(b"".join(framing.encode(p) for p in payloads))
        wire = b"".join(framing.encode(p[::-1]) for p in payloads)
        assert recv_exact(c, len(wire)) == wire


def test_replies_in_order_none_means_no_reply_and_send_interleaves(S):
    def handler(conn, f):
        n = int(f)
        if n % 3 == 0:
            return None
        if n % 3 == 1:
            conn.send(b"s%d" % n)
            return b"r%d" % n
        conn.send(bytearray(b"a%d" % n))
        conn.send(memoryview(b"b%d" % n))
        return memoryview(bytearray(b"r%d" % n))

    with serving(S, handler, framing=S.LengthPrefix()) as (server, addr):
        with connect(addr) as c:
            c.sendall(frames(*[b"%d" % i for i in range(30)]))
            expected = []
            for n in range(30):
                if n % 3 == 1:
                    expected += [b"s%d" % n, b"r%d" % n]
                elif n % 3 == 2:
                    expected += [b"a%d" % n, b"b%d" % n, b"r%d" % n]
            assert read_frames(c, len(expected)) == expected
        stats = server.stats()
        assert stats["frames_in"] == 30 and stats["frames_out"] == len(expected)


def test_write_in_framed_mode_is_unframed(S):
    def handler(conn, f):
        conn.write(b"RAW")
        return f

    with serving(S, handler, framing=S.LengthPrefix()) as (server, addr), connect(addr) as c:
        c.sendall(frame(b"p"))
        assert recv_exact(c, 3 + 5) == b"RAW" + frame(b"p")


def test_batch_mode(S):
    seen = []

    def handler(conn, batch):
        seen.append(list(batch))
        return [f.upper() for f in batch]

    with serving(S, handler, framing=S.LengthPrefix(), batch=True) as (server, addr), connect(addr) as c:
        c.sendall(frames(b"a", b"b", b"c"))
        assert read_frames(c, 3) == [b"A", b"B", b"C"]
        c.sendall(frames(b"d") + frame(b"e")[:3])
        assert read_frame(c) == b"D"
        c.sendall(frame(b"e")[3:])
        assert read_frame(c) == b"E"
    assert seen[0] == [b"a", b"b", b"c"]  # one call for one read
    assert [f for batch in seen for f in batch] == [b"a", b"b", b"c", b"d", b"e"]
    assert all(type(f) is bytes for batch in seen for f in batch)


def test_batch_handler_returning_none_or_generator(S):
    def handler(conn, batch):
        if batch[0] == b"none":
            return None
        return (f + b"!" for f in batch)

    with serving(S, handler, framing=S.Delimiter(b"\n"), batch=True) as (server, addr), connect(addr) as c:
        c.sendall(b"none\nx\ny\n")
        wait_until(lambda: server.stats()["frames_in"] == 3, what="the first batch")
        c.sendall(b"z\n")
        assert recv_exact(c, 3) == b"z!\n"


# ---- raw mode -----------------------------------------------------------------------------


def test_raw_mode_consumes_what_it_returns(S):
    seen = []

    def handler(conn, data):
        assert isinstance(data, memoryview) and data.readonly
        seen.append(bytes(data))
        end = bytes(data).find(b"\n")
        if end < 0:
            return 0  # wait for more
        conn.write(bytes(data[:end]).upper() + b"\n")
        return end + 1

    with serving(S, handler) as (server, addr), connect(addr) as c:
        c.sendall(b"hel")
        wait_until(lambda: seen, what="the first call")
        c.sendall(b"lo\nwor")
        assert recv_exact(c, 6) == b"HELLO\n"
        c.sendall(b"ld\nagain\nand\n")
        assert recv_exact(c, 6 + 6 + 4) == b"WORLD\nAGAIN\nAND\n"
    assert seen[0] == b"hel" and seen[1] == b"hello\nwor"
    assert b"again\nand\n" in seen  # called again with what is left while it consumes


def test_raw_view_is_released_and_kept_slices_stay_intact(S):
    kept = []

    def handler(conn, data):
        kept.append((data, data[0:4], bytes(data[0:4])))
        conn.write(b"k")
        return len(data)

    with serving(S, handler, read_size=4096) as (server, addr), connect(addr) as c:
        for i in range(20):
            c.sendall(b"%04d" % i)
            assert recv_exact(c, 1) == b"k"
    for view, piece, copy in kept:
        with pytest.raises(ValueError):
            view[0]  # released when the handler returned
        assert bytes(piece) == copy  # a slice that outlived the call: never reused memory


def test_raw_view_kept_and_used_after_the_call_raises_value_error(S):
    # Both backends: the handler's view is unusable after the call, with the same exception
    # type, whether the bytes were a fresh read or held over. (Its .obj, kept by itself, is
    # the compiled backend's window, which refuses new exports after the call: see
    # test_server_compiled; on the pure backend it is the read's own bytes, documented.)
    kept = []
    objs = []

    def handler(conn, data):
        kept.append(data)
        objs.append(data.obj)
        if len(data) < 8:
            return 0  # held over: the next call sees held bytes
        conn.write(b"k")
        return len(data)

    with serving(S, handler, read_size=4096) as (server, addr), connect(addr) as c:
        for i in range(10):
            c.sendall(b"%04d" % i)
            wait_until(lambda n=i: len(kept) > n, what="a handler call")
            if i % 2:
                assert recv_exact(c, 1) == b"k"
    for view in kept:
        with pytest.raises(ValueError):
            bytes(view)
    if S.__name__.startswith("fastsock._c"):
        for obj in objs:  # the window of the call: no new export once it returned
            with pytest.raises(ValueError):
                memoryview(obj)
    else:  # the read's bytes, or the connection's held bytearray (as documented)
        assert {type(obj) for obj in objs} <= {bytes, bytearray}


def test_raw_views_of_held_bytes_kept_by_the_handler_stay_intact(S):
    """A view of bytes held over from earlier reads: a slice the handler keeps makes the
    server move to a new buffer instead of reusing (or trimming) the one the slice sees."""
    kept = []

    def handler(conn, data):
        kept.append((data[:], bytes(data)))  # a slice of every view, and a copy to compare
        if len(data) < 12:
            return 0  # wait for more: the bytes stay held
        conn.write(b"ok")
        return 4  # consume a little; the rest stays held too (and is offered again)

    with serving(S, handler) as (server, addr):
        with connect(addr) as c:
            for chunk in (b"abcd", b"efgh", b"ijkl", b"mnop"):
                calls = len(kept)
                c.sendall(chunk)
                wait_until(lambda n=calls: len(kept) > n, what="a handler call")
            assert recv_exact(c, 2) == b"ok"
    assert len(kept) >= 4
    for piece, copy in kept:
        assert bytes(piece) == copy  # never overwritten by later reads


def test_raw_mode_send_is_refused_and_write_works(S):
    errors = []

    def handler(conn, data):
        try:
            conn.send(b"x")
        except RuntimeError as exc:
            errors.append(exc)
        conn.write(bytearray(data))
        return len(data)

    with serving(S, handler) as (server, addr), connect(addr) as c:
        c.sendall(b"ping")
        assert recv_exact(c, 4) == b"ping"
    assert len(errors) == 1


# ---- hooks and the Connection ------------------------------------------------------------


def test_hooks_and_connection_attributes(S):
    rec = Recorder()
    info = {}

    def on_connect(conn):
        rec.on_connect(conn)
        assert conn.data is None
        conn.data = {"n": 0}
        conn.send(b"welcome")

    def handler(conn, f):
        conn.data["n"] += 1
        info.update(peer=conn.peer, sockname=conn.sockname, fd=conn.fileno(), repr=repr(conn),
                    server=conn.server, closed=conn.closed, pending=conn.pending)
        if f == b"bye":
            conn.close()
            assert conn.closed
            with pytest.raises(BrokenPipeError) as e:
                conn.send(b"late")
            assert e.value.errno == errno.EPIPE
            return None
        return f

    with serving(S, handler, framing=S.LengthPrefix(), on_connect=on_connect, on_close=rec.on_close) as (server,
                                                                                                        addr):
        with connect(addr) as c:
            assert read_frame(c) == b"welcome"
            c.sendall(frames(b"one", b"bye", b"never delivered"))
            assert read_frame(c) == b"one"
            assert is_eof(c)
            wait_until(rec.closes, what="on_close")
            assert info["peer"] == c.getsockname() and info["sockname"] == c.getpeername()
        assert info["server"] is server and info["fd"] >= 0 and info["closed"] is False
        assert "127.0.0.1" in info["repr"]
        conn, exc = rec.closes()[0]
        assert exc is None and conn is rec.connected[0] and conn.data["n"] == 2
        assert conn.closed and conn.fileno() == -1 and conn.pending == 0
        assert "closed" in repr(conn)
        stats = server.stats()
        assert stats["accepted"] == 1 and stats["closed"] == 1 and stats["connections"] == 0


def test_on_close_once_per_connection_with_peer_eof_and_abort(S):
    rec = Recorder()

    def handler(conn, f):
        if f == b"abort":
            conn.send(b"dropped")
            conn.abort()
            conn.abort()
            conn.close()
            return None
        return f

    with serving(S, handler, framing=S.LengthPrefix(), on_connect=rec.on_connect, on_close=rec.on_close) as (
            server, addr):
        a, b = connect(addr), connect(addr)
        with a, b:
            a.sendall(frame(b"x"))
            assert read_frame(a) == b"x"
            a.shutdown(stdsocket.SHUT_WR)  # a half-close: the replies still come, then EOF
            assert is_eof(a)
            b.sendall(frame(b"abort"))
            assert is_eof(b)
            wait_until(lambda: len(rec.closes()) == 2, what="two on_close calls")
    closes = rec.closes()
    assert [exc for _, exc in closes] == [None, None]
    assert len({id(c) for c, _ in closes}) == 2
    assert sorted(map(id, rec.connected)) == sorted(id(c) for c, _ in closes)


def test_peer_eof_mid_frame_reports_incomplete_read(S):
    rec = Recorder()
    with serving(S, echo, framing=S.LengthPrefix(), on_close=rec.on_close) as (server, addr):
        with connect(addr) as c:
            c.sendall(frame(b"whole") + frame(b"partial")[:6])
            assert read_frame(c) == b"whole"
            c.shutdown(stdsocket.SHUT_WR)
            assert is_eof(c)
        wait_until(rec.closes, what="on_close")
    exc = rec.closes()[0][1]
    assert isinstance(exc, IncompleteReadError)
    assert exc.partial == frame(b"partial")[:6] and exc.expected == 4 + 7


def test_client_reset_is_reported(S):
    rec = Recorder()
    with serving(S, lambda conn, f: None, framing=S.LengthPrefix(), on_close=rec.on_close) as (server, addr):
        c = connect(addr)
        c.sendall(frame(b"x") + b"\0")
        wait_until(lambda: server.stats()["frames_in"] == 1, what="the frame")
        c.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        c.close()  # RST
        wait_until(rec.closes, what="on_close")
    assert isinstance(rec.closes()[0][1], (ConnectionResetError, IncompleteReadError, OSError))


# ---- one system call per connection per turn ----------------------------------------------


def _settled(server, bytes_out):
    """stats() once the server counted `bytes_out` bytes sent (a reply can reach the client
    before the loop thread has updated its counters)."""
    return wait_until(lambda: (lambda st: st if st["bytes_out"] >= bytes_out else None)(server.stats()),
                      what=f"bytes_out to reach {bytes_out}")


def test_every_reply_of_one_read_leaves_in_one_send(S):
    with serving(S, lambda conn, f: f * 2, framing=S.LengthPrefix()) as (server, addr), connect(addr) as c:
        c.sendall(frame(b"warm"))
        assert read_frame(c) == b"warmwarm"
        before = _settled(server, 12)
        c.sendall(frames(*[b"%02d" % i for i in range(50)]))  # one segment: one read
        replies = read_frames(c, 50)
        assert replies == [b"%02d" % i * 2 for i in range(50)]
        after = _settled(server, 12 + 50 * 8)
    assert after["frames_in"] - before["frames_in"] == 50
    # 50 replies, one send (a loopback segment of 300 bytes arrives in one read: one turn)
    assert after["writes"] - before["writes"] == 1
    assert after["bytes_out"] - before["bytes_out"] == 50 * 8


def test_replies_of_a_batch_and_of_sends_share_the_syscall(S):
    def handler(conn, batch):
        for f in batch:
            conn.send(f)
        conn.write(b"|")
        return batch

    with serving(S, handler, framing=S.LengthPrefix(), batch=True) as (server, addr), connect(addr) as c:
        c.sendall(frame(b"warm"))
        recv_exact(c, 8 + 1 + 8)
        before = _settled(server, 17)["writes"]
        c.sendall(frames(*[b"x"] * 20))
        recv_exact(c, 20 * 5 + 1 + 20 * 5)
        assert _settled(server, 17 + 201)["writes"] - before == 1


# ---- scale: 1,000 connections, frames split at every byte boundary -------------------------


@pytest.mark.parametrize("name, make", ALL_FRAMINGS, ids=[n for n, _ in ALL_FRAMINGS])
def test_a_stream_cut_at_every_byte_boundary(S, name, make):
    """Each cut of a pipelined stream reaches the server as a read boundary (the test waits
    for the server to have read the first part before sending the rest)."""
    framing = make(S)
    payloads = [b"ab", b"c" * 20, b"", b"defgh"] if name != "Netstring" else [b"ab", b"c" * 20, b"x", b"defgh"]
    if name.startswith("Delimiter"):
        payloads = [p or b"-" for p in payloads]
    stream = b"".join(framing.encode(p) for p in payloads)
    expected = b"".join(framing.encode(p[::-1]) for p in payloads)
    with serving(S, lambda conn, f: f[::-1], framing=framing) as (server, addr):
        for cut in range(1, len(stream)):
            with connect(addr) as c:
                base = server.stats()["bytes_in"]
                c.sendall(stream[:cut])
                wait_until(lambda b=base + cut: server.stats()["bytes_in"] == b, what="the first part read")
                c.sendall(stream[cut:])
                assert recv_exact(c, len(expected)) == expected


def test_thousand_connections_pipelined_and_split_everywhere(S):
    count = 1000
    payloads = [b"m%03d" % k + b"." * k for k in range(6)]  # 6 frames of 4..9 bytes
    stream = frames(*payloads)
    cuts = len(stream) - 1

    def pieces(i):
        # client i cuts the stream after byte (i % cuts) + 1 and in the middle of what is
        # left: across the clients every boundary is cut; every 50th sends byte by byte
        if i % 50 == 0:
            return [stream[j:j + 1] for j in range(len(stream))]
        a = i % cuts + 1
        b = a + (len(stream) - a) // 2
        return [p for p in (stream[:a], stream[a:b], stream[b:]) if p]

    with serving(S, lambda conn, f: f.upper(), framing=S.LengthPrefix(), backlog=2048) as (server, addr):
        clients = Clients(addr, count)
        try:
            wait_until(lambda: server.stats()["connections"] == count, what="every connection accepted")
            plans = [pieces(i) for i in range(count)]
            expected = frames(*[p.upper() for p in payloads])
            deadline = time.monotonic() + 90
            sent = 0
            rounds = 0
            while any(plans):
                for i, plan in enumerate(plans):
                    if plan:
                        piece = plan.pop(0)
                        clients.send_all(i, piece, deadline)
                        sent += len(piece)
                # the server reads every piece of this round before the next round is sent,
                # so each cut is a read boundary on the server's side
                while server.stats()["bytes_in"] < sent:
                    assert time.monotonic() < deadline, "the server did not read in time"
                    clients.pump(0.01)
                rounds += 1
                assert rounds <= len(stream)
            while any(len(r) < len(expected) for r in clients.received):
                assert time.monotonic() < deadline, "replies did not all arrive in time"
                clients.pump(0.2)
            assert all(bytes(r) == expected for r in clients.received)
            stats = server.stats()
            assert stats["connections"] == count
            assert stats["frames_in"] == count * len(payloads)
        finally:
            clients.close()
        wait_until(lambda: server.stats()["connections"] == 0, what="every connection closed")
        assert server.stats()["closed"] == count


def test_handlers_run_on_the_loop_thread(S):
    threads = set()

    def handler(conn, f):
        threads.add(threading.get_ident())
        return f

    with serving(S, handler, framing=S.LengthPrefix()) as (server, addr):
        for _ in range(3):
            with connect(addr) as c:
                c.sendall(frame(b"t"))
                read_frame(c)
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_stop_from_a_handler_on_an_adopted_socket(S):
    sock = stdsocket.socket()
    sock.bind(LOCAL)
    sock.listen()
    addr = sock.getsockname()

    def handler(conn, f):
        if f == b"stop":
            conn.server.stop(1)
        return f

    server = S.Server(handler, framing=S.LengthPrefix())
    server.listen(sock=sock)
    with Running(server) as run:
        with connect(addr) as c:
            c.sendall(frame(b"stop"))
            assert read_frame(c) == b"stop"
            assert is_eof(c)  # half-closed by the stop
        run.join()
    assert sock.fileno() == -1  # the server owned it: closed by the stop


def test_serve_function_listens_and_returns_when_stopped(S, tmp_path):
    path = str(tmp_path / "serve.sock")
    servers = []

    def handler(conn, f):
        servers.append(conn.server)
        conn.server.stop(1)
        return f

    t = threading.Thread(target=S.serve, args=(handler, path), kwargs=dict(framing=S.LengthPrefix()))
    t.start()
    try:
        def listening():
            try:
                return connect(path)
            except (FileNotFoundError, ConnectionRefusedError):  # not bound, or bound but not listening yet
                return None

        with wait_until(listening, what="the AF_UNIX listener") as c:
            c.sendall(frame(b"bye"))
            assert read_frame(c) == b"bye"
    finally:
        t.join(WAIT)
    assert not t.is_alive()
    assert servers[0].stats()["running"] is False
