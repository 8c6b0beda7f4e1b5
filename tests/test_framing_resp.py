"""fastsock.RESP and fastsock.resp: Redis protocol commands read as argument lists (scanned
in C, or by the pure twin), replies encoded from values, limits refused from the headers,
on Streams and Servers of both backends; random chunkings and a C-vs-pure differential."""

from __future__ import annotations

import importlib
import random
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serverutil import Recorder, connect, is_eof, serving, wait_until
from sockutil import Peer, examples, make_pair, pure_only

from fastsock import FrameTooLarge, IncompleteReadError, resp
from fastsock.framing import RESP, RESP_ARGS_LIMIT, RESP_SIZE_LIMIT, FramingError

BACKENDS = ["fastsock._c._speedups", "fastsock._py"]


# -- the framing object -------------------------------------------------------------------


def test_value_object_and_limits():
    assert RESP() == RESP(16 * 1024 * 1024, 1024 * 1024)
    assert repr(RESP(100, 5)) == "RESP(max_size=100, max_args=5)"
    assert hash(RESP(100, 5)) == hash(RESP(100, 5)) and RESP(100, 5) != RESP(100, 6)
    for bad in (dict(max_size=0), dict(max_size=RESP_SIZE_LIMIT + 1), dict(max_args=-1),
                dict(max_args=RESP_ARGS_LIMIT + 1)):
        with pytest.raises(ValueError):
            RESP(**bad)
    with pytest.raises(TypeError):
        RESP(max_args="3")


@pytest.mark.parametrize("wire,args", [
    (b"*1\r\n$4\r\nPING\r\n", [b"PING"]),
    (b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n", [b"SET", b"key", b"va\r\nl"]),
    (b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n", [b"GET", b""]),
    (b"*0\r\n", []),
    (b"*-1\r\n", []),
    (b"PING\r\n", [b"PING"]),
    (b"  SET \tk  v\n", [b"SET", b"k", b"v"]),
    (b"\r\n", []),
    (b"GET a\rb\r\n", [b"GET", b"a\rb"]),
    (b"$x \x0by\r\n", [b"$x", b"\x0by"]),  # inline: split at spaces and tabs only
])
def test_decode(wire, args):
    assert RESP().decode(wire + b"*1\r\n") == (args, len(wire))
    for cut in range(len(wire)):
        assert RESP().decode(wire[:cut]) is None


@pytest.mark.parametrize("wire", [
    b"*x\r\n", b"*\r\n", b"*1x", b"*1\rx", b"*-2\r\n", b"*1\r\n:1\r\n", b"*1\r\n$-1\r\n",
    b"*1\r\n$3\r\nabcd\r\n", b"*1\r\n$3\r\nabcX", b"*1\r\n$3\r\nabc\rX",
    b"*1\r\n$00000000000000000001\r\n",
])
def test_malformed(wire):
    with pytest.raises(FramingError):
        RESP().decode(wire)


def test_hostile_sizes_are_refused_from_the_digits():
    f = RESP(max_size=1000, max_args=100)
    with pytest.raises(FrameTooLarge) as info:
        f.decode(b"*99999999")  # no CR LF yet: the digits alone pass max_args
    assert info.value.limit == 100 and info.value.size > 100 and "max_args" in str(info.value)
    with pytest.raises(FrameTooLarge) as info:
        f.decode(b"*1\r\n$4294967295")
    assert info.value.limit == 1000 and info.value.size > 1000
    assert f.decode(b"*1\r\n$988\r\n") is None  # 4 + 6 + 988 + 2 = 1000 bytes: fits
    with pytest.raises(FrameTooLarge) as info:
        f.decode(b"*1\r\n$989\r\n")
    assert info.value.size == 1001
    small = RESP(max_size=8, max_args=2)
    with pytest.raises(FrameTooLarge):
        small.decode(b"GET abcd")  # no end of line within 8 bytes
    assert small.decode(b"GET abc\n") == ([b"GET", b"abc"], 8)
    with pytest.raises(FrameTooLarge) as info:
        small.decode(b"a b c\n")
    assert (info.value.size, info.value.limit) == (3, 2)


# -- replies ------------------------------------------------------------------------------


def test_reply_encoding_table():
    enc = resp.encode
    assert enc(b"v") == b"$1\r\nv\r\n" and enc(bytearray(b"")) == b"$0\r\n\r\n"
    assert enc(memoryview(b"ab")) == b"$2\r\nab\r\n"
    assert enc("OK") == b"+OK\r\n" and enc(7) == b":7\r\n" and enc(-1) == b":-1\r\n"
    assert enc(True) == b":1\r\n"
    assert enc([b"a", None, 2, [b"x"]]) == b"*4\r\n$1\r\na\r\n$-1\r\n:2\r\n*1\r\n$1\r\nx\r\n"
    assert enc(()) == b"*0\r\n"
    assert enc(resp.Error("ERR no")) == b"-ERR no\r\n"
    assert enc(resp.NULL) == b"$-1\r\n" and enc(resp.NULL_ARRAY) == b"*-1\r\n"
    assert enc(resp.OK) is resp.OK and resp.PONG == b"+PONG\r\n"
    assert resp.array([b"a", "b"]) == b"*2\r\n$1\r\na\r\n+b\r\n" and resp.bulk(None) is resp.NULL
    assert resp.integer(5) == b":5\r\n" and resp.error("E x") == b"-E x\r\n"
    assert resp.command("SET", b"k", 5) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n"
    with pytest.raises(ValueError):
        resp.simple("a\r\nb")
    with pytest.raises(ValueError):
        resp.Error("x\ny")
    with pytest.raises(ValueError):
        resp.integer(1 << 63)
    with pytest.raises(TypeError):
        enc(1.5)
    with pytest.raises(TypeError):
        enc({b"a": 1})
    with pytest.raises(FrameTooLarge):
        RESP(max_size=3).encode(b"abcd")
    assert RESP(max_size=3).encode(b"abc") == b"$3\r\nabc\r\n"


# -- Streams ------------------------------------------------------------------------------


def test_stream_reads_commands_and_writes_replies(impl):
    a, b = make_pair(impl, "unix")
    server = impl.Stream(a, framing=impl.RESP())
    client = impl.Stream(b)
    with server, client:
        client.write(resp.command("SET", "k", "v") + b"PING\r\n" + resp.command("GET", "k"))
        client.flush()
        assert server.read_frame() == [b"SET", b"k", b"v"]
        assert server.read_frames() == [[b"PING"], [b"GET", b"k"]]
        server.write_frame(b"v")
        server.write_frames([resp.OK, 3, [b"a", None], resp.Error("ERR x")])
        server.flush()
        want = b"$1\r\nv\r\n+OK\r\n:3\r\n*2\r\n$1\r\na\r\n$-1\r\n-ERR x\r\n"
        assert client.read_exactly(len(want)) == want
        with pytest.raises(TypeError):
            server.write_frames([b"ok", 1.5])  # validated before anything is queued
        server.flush()
        client.write(b"*2\r\n$3\r\nGET\r\n")
        client.flush()
        client.socket.shutdown(1)
        with pytest.raises(IncompleteReadError):
            server.read_frame()


def test_stream_refuses_a_hostile_header_without_waiting_for_its_body(impl):
    """The header alone raises: nothing waits for (or reserves) the announced bytes."""
    for header in (b"*1\r\n$4294967295\r\n", b"*99999999\r\n"):
        a, b = make_pair(impl, "unix")
        stream = impl.Stream(a, framing=impl.RESP(max_size=1 << 20, max_args=1000))
        with stream, b:
            b.sendall(header)
            stream.socket.settimeout(10)
            with pytest.raises(FrameTooLarge):
                stream.read_frame()
            assert stream.buffered == len(header)  # nothing consumed: the bytes stay


def _read_all(module: str, wire: bytes, cuts: list[int], max_size: int = 1 << 20, max_args: int = 64):
    """(frames, (exception type name, size, limit) or None, bytes not consumed) after a
    Stream of backend `module` read `wire`, written in pieces of `cuts` then closed. The
    bytes not consumed are the Stream's buffered bytes plus those it had not received yet;
    the size of an inline line refused for its length is the bytes scanned so far, which
    depends on how the reads fell, so it is reported as ">limit"."""
    impl = importlib.import_module(module)
    a, b = make_pair(impl, "unix")
    stream = impl.Stream(a, framing=impl.RESP(max_size=max_size, max_args=max_args), read_size=64)

    def write() -> None:
        pos = i = 0
        try:
            while pos < len(wire):
                b.sendall(wire[pos:pos + cuts[i % len(cuts)]])
                pos += cuts[i % len(cuts)]
                i += 1
        except OSError:  # the reader refused a frame and closed
            pass
        b.close()

    writer = Peer(write)
    frames: list[list[bytes]] = []
    error = None
    with stream:
        try:
            while True:
                batch = stream.read_frames()
                if not batch:
                    break
                frames += batch
        except (FrameTooLarge, FramingError, EOFError) as exc:
            size = getattr(exc, "size", None)
            if isinstance(exc, FrameTooLarge) and exc.limit == max_size and not _header_sized(wire, frames):
                size = ">limit"
            error = (type(exc).__name__, size, getattr(exc, "limit", None))
        left = stream.buffered
        stream.socket.settimeout(10)
        while True:  # what the Stream had not received yet
            data = stream.socket.recv(65536)
            if not data:
                break
            left += len(data)
    writer.join()
    return frames, error, left


def _header_sized(wire: bytes, frames: list[list[bytes]]) -> bool:
    """Whether the command after `frames` (at the start of what they leave of `wire`) is an
    array, whose refusal size comes from its headers (an inline line's does not)."""
    pos = 0
    framing = RESP(max_size=RESP_SIZE_LIMIT, max_args=RESP_ARGS_LIMIT)
    for _ in frames:
        pos += framing.decode(wire[pos:])[1]
    return wire[pos:pos + 1] == b"*"


def _modules(pytestconfig):
    return BACKENDS[1:] if pure_only(pytestconfig) else BACKENDS


_arg = st.binary(max_size=40) | st.sampled_from([b"", b"\r\n", b"$3", b"*1", b"a" * 300])
_command = st.lists(_arg, max_size=6)


@pytest.mark.timeout(300)
def test_every_chunking_gives_the_same_commands(pytestconfig):
    modules = _modules(pytestconfig)

    @settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(cmds=st.lists(_command, max_size=20), inline=st.lists(st.booleans(), max_size=20),
           cuts=st.lists(st.integers(1, 300), min_size=1, max_size=8) | st.just([1]))
    def check(cmds, inline, cuts):
        wire = b""
        expect = []
        for i, cmd in enumerate(cmds):
            words = [w for w in cmd if w and all(c not in w for c in b" \t\r\n")]
            if i < len(inline) and inline[i] and words and words[0][:1] != b"*":
                wire += b" ".join(words) + b"\r\n"
                expect.append(words)
            else:
                wire += resp.command(*cmd)
                expect.append(cmd)
        for module in modules:
            assert _read_all(module, wire, cuts) == (expect, None, 0), module

    check()


@pytest.mark.timeout(300)
def test_c_and_pure_agree_on_any_bytes(pytestconfig):
    """Differential: random, truncated and corrupted commands give both backends the same
    frames, the same error (type, size, limit) and the same bytes left buffered."""
    if pure_only(pytestconfig):
        pytest.skip("needs the compiled backend (--no-c-extensions)")

    pieces = st.sampled_from([b"*", b"$", b"\r\n", b"\r", b"\n", b"-1", b"0", b"3", b"12", b"99999999999",
                              b"abc", b" ", b"\t", b"PING", b"*2\r\n", b"$3\r\n", b"*1\r\n$4\r\nPING\r\n"])

    @settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(parts=st.lists(pieces | st.binary(max_size=8), max_size=30),
           cuts=st.lists(st.integers(1, 50), min_size=1, max_size=5) | st.just([1]),
           max_size=st.sampled_from([8, 40, 1 << 20]), max_args=st.sampled_from([0, 2, 64]))
    def check(parts, cuts, max_size, max_args):
        wire = b"".join(parts)
        c = _read_all(BACKENDS[0], wire, cuts, max_size, max_args)
        py = _read_all(BACKENDS[1], wire, cuts, max_size, max_args)
        assert c == py

    check()


def test_a_command_trickling_in_is_scanned_once(impl):
    """Many arguments in 1-byte pieces: the resume point keeps the scan linear (a rescan
    per read would be quadratic: about 5e9 steps here, far beyond the timeout)."""
    cmd = resp.command(*([b"x"] * 20000))
    frames, error, left = _read_all(impl.__name__, cmd, [7], max_size=1 << 20, max_args=20000)
    assert frames == [[b"x"] * 20000] and error is None and left == 0


# -- Servers ------------------------------------------------------------------------------


def _kv(store):
    def handle(conn, args):
        if args[0] == b"SET":
            store[args[1]] = args[2]
            return resp.OK
        if args[0] == b"GET":
            return store.get(args[1], resp.NULL)
        if args[0] == b"INCR":
            store[args[1]] = b"%d" % (int(store.get(args[1], b"0")) + 1)
            return int(store[args[1]])
        if args[0] == b"MGET":
            return [store.get(k) for k in args[1:]]
        if args[0] == b"SEND":  # conn.send(value) encodes too
            conn.send(args[1])
            return None
        return resp.Error("ERR unknown command")
    return handle


@pytest.mark.parametrize("batch", [False, True], ids=["per-frame", "batch"])
def test_server_answers_pipelined_commands_in_order(impl, batch):
    store: dict = {}
    handle = _kv(store)
    handler = (lambda conn, frames: [handle(conn, f) for f in frames]) if batch else handle
    rng = random.Random(3)
    cmds, want = [], b""
    for i in range(300):
        kind = rng.choice(["SET", "GET", "INCR", "MGET", "BAD"])
        if kind == "SET":
            cmds.append(resp.command("SET", f"k{i % 7}", rng.randbytes(rng.randrange(0, 3000))))
        elif kind == "GET":
            cmds.append(resp.command("GET", f"k{i % 7}"))
        elif kind == "INCR":
            cmds.append(b"INCR n\r\n")  # inline
        elif kind == "MGET":
            cmds.append(resp.command("MGET", "k1", "nokey"))
        else:
            cmds.append(resp.command("NOPE"))
    shadow: dict = {}
    expected_handle = _kv(shadow)
    for c in cmds:
        args = RESP().decode(c)[0]
        want += resp.encode(expected_handle(None, args))
    with serving(impl, handler, framing=impl.RESP(), batch=batch) as (server, addr):
        with connect(addr) as sock:
            wire = b"".join(cmds)
            pos = 0
            while pos < len(wire):  # random pieces: commands split anywhere
                step = rng.randrange(1, 4000)
                sock.sendall(wire[pos:pos + step])
                pos += step
            got = b""
            while len(got) < len(want):
                data = sock.recv(1 << 16)
                assert data, "EOF before every reply"
                got += data
            assert got == want


def test_server_send_and_cross_thread_send_encode_values(impl):
    conns = []
    with serving(impl, _kv({}), framing=impl.RESP(), on_connect=conns.append) as (server, addr):
        with connect(addr) as sock:
            sock.sendall(resp.command("SEND", "hi"))
            assert sock.recv(100) == b"$2\r\nhi\r\n"
            wait_until(lambda: conns, what="on_connect")
            done = threading.Event()
            threading.Thread(target=lambda: (conns[0].send(["a", 1]), done.set())).start()
            assert done.wait(10)
            assert sock.recv(100) == b"*2\r\n+a\r\n:1\r\n"


@pytest.mark.parametrize("wire,error,limit", [
    (b"*99999999\r\n", FrameTooLarge, 100),
    (b"*1\r\n$4294967295\r\n", FrameTooLarge, 1 << 16),
    (b"*1\r\n:1\r\n", FramingError, None),
])
def test_server_closes_a_connection_whose_command_it_refuses(impl, wire, error, limit):
    rec = Recorder()
    with serving(impl, _kv({}), framing=impl.RESP(max_size=1 << 16, max_args=100),
                 on_close=rec.on_close) as (server, addr):
        with connect(addr) as bad, connect(addr) as good:
            bad.sendall(resp.command("SET", "a", "1") + wire)
            assert bad.recv(100) == b"+OK\r\n"  # the command before is answered first
            assert is_eof(bad)
            (conn, exc), = wait_until(rec.closes, what="on_close")
            assert isinstance(exc, error)
            if limit is not None:
                assert exc.limit == limit
            good.sendall(resp.command("GET", "a"))
            assert good.recv(100) == b"$1\r\n1\r\n"  # the server keeps serving


def test_server_reply_of_a_bad_type_is_a_handler_error(impl, caplog):
    rec = Recorder()
    with serving(impl, lambda conn, args: 1.5, framing=impl.RESP(), on_close=rec.on_close) as (server, addr):
        with connect(addr) as sock:
            sock.sendall(b"PING\r\n")
            assert is_eof(sock)
            (conn, exc), = wait_until(rec.closes, what="on_close")
            assert isinstance(exc, TypeError)
