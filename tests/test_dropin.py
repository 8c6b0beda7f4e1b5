"""`import fastsock as socket` works for ordinary socket code: the stdlib's names are all
there, and fastsock sockets behave exactly like stdlib sockets everywhere stdlib code uses one."""

from __future__ import annotations

import asyncio
import os
import selectors
import socket as stdsocket
import threading

import pytest
from aioutil import tls_contexts
from sockutil import Peer

import fastsock

pytestmark = pytest.mark.timeout(30)


def test_every_stdlib_public_name_is_reexported():
    missing = [name for name in stdsocket.__all__ if not hasattr(fastsock, name)]
    assert missing == []
    assert fastsock.AF_INET == stdsocket.AF_INET
    assert fastsock.gaierror is stdsocket.gaierror
    assert fastsock.timeout is stdsocket.timeout
    assert fastsock.htonl(1) == stdsocket.htonl(1)
    assert fastsock.inet_pton is stdsocket.inet_pton
    assert set(stdsocket.__all__) <= set(fastsock.__all__)


def test_constructors_are_replaced(impl):
    assert issubclass(impl.socket, stdsocket.socket)
    assert impl.SocketType is impl.socket
    assert fastsock.socket is fastsock._backend.impl.socket
    for name in ("create_connection", "create_server", "socketpair", "fromfd", "wrap"):
        assert getattr(fastsock, name) is getattr(fastsock._backend.impl, name)


def test_backend_flag():
    assert fastsock.BACKEND in ("c", "python")


def test_howto_client_server_with_the_drop_in(impl):
    socket = stdsocket
    server = impl.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(5)

    def serve():
        conn, addr = server.accept()
        with conn:
            assert type(conn) is impl.socket
            msg = conn.recv_exactly(5)
            conn.sendall(msg.upper())

    peer = Peer(serve)
    client = impl.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.connect(server.getsockname())
    client.sendall(b"hello")
    assert client.recv_exactly(5) == b"HELLO"
    peer.join()
    client.close()
    server.close()


def test_accept_keeps_stdlib_timeout_rule(impl):
    with impl.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(5)
        client = impl.create_connection(server.getsockname())
        conn, _ = server.accept()
        with client, conn:
            assert type(conn) is impl.socket
            assert conn.gettimeout() is None  # as stdlib: blocking unless a default timeout


def test_dup_makefile_with_and_close(impl):
    a, b = impl.socketpair()
    with a, b:
        c = a.dup()
        assert type(c) is impl.socket and c.fileno() != a.fileno()
        c.sendall(b"line one\nline two\n")
        c.close()
        with b.makefile("rb") as f:
            assert f.readline() == b"line one\n"
        wf = a.makefile("wb")
        wf.write(b"via makefile")
        wf.flush()
        wf.close()
        assert b.recv_exactly(12) == b"via makefile"
    assert a.fileno() == -1 and a._closed


def test_timeouts_and_blocking_state_like_stdlib(impl):
    a, b = impl.socketpair()
    with a, b:
        assert a.gettimeout() is None and a.getblocking()
        a.settimeout(1.5)
        assert a.gettimeout() == 1.5
        a.setblocking(False)
        assert a.gettimeout() == 0.0 and not a.getblocking()
        with pytest.raises(BlockingIOError):
            a.recv(1)


def test_stdlib_selectors_accept_fastsock_sockets(impl):
    a, b = impl.socketpair()
    with a, b, selectors.DefaultSelector() as sel:
        b.setblocking(False)
        sel.register(b, selectors.EVENT_READ, data="b")
        a.sendall(b"ping")
        events = sel.select(timeout=5)
        assert [(key.fileobj, key.data) for key, _ in events] == [(b, "b")]
        assert b.recv_exactly(4) == b"ping"


def test_fromfd_duplicates(impl):
    a, b = impl.socketpair()
    with a, b:
        c = impl.fromfd(a.fileno(), a.family, a.type)
        with c:
            assert type(c) is impl.socket and c.fileno() != a.fileno()
            c.sendall(b"dup")
            assert b.recv_exactly(3) == b"dup"


def test_wrap_adopts_without_closing(impl):
    a, b = stdsocket.socketpair()
    a.settimeout(2.5)
    fd = a.fileno()
    w = impl.wrap(a)
    with w, b:
        assert type(w) is impl.socket
        assert w.fileno() == fd and a.fileno() == -1  # the old object is detached
        assert w.gettimeout() == 2.5
        w.sendall(b"adopted")
        assert b.recv(7) == b"adopted"
        assert impl.wrap(w) is w
    nb1, nb2 = stdsocket.socketpair()
    nb1.setblocking(False)
    w2 = impl.wrap(nb1)
    with w2, nb2:
        assert w2.gettimeout() == 0.0


def test_wrap_rejects_what_it_cannot_adopt(impl):
    with pytest.raises(TypeError):
        impl.wrap(42)
    a, b = stdsocket.socketpair()
    b.close()
    a.close()
    with pytest.raises(OSError):
        impl.wrap(a)


def test_ssl_wrap_socket(impl):
    server_ctx, client_ctx = tls_contexts()
    with impl.create_server(("127.0.0.1", 0)) as listener:
        def serve():
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(5).upper())

        peer = Peer(serve)
        raw = impl.create_connection(listener.getsockname())
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"hello")
            assert tls.recv(5) == b"HELLO"
            with pytest.raises(TypeError):
                impl.wrap(tls)  # TLS state lives in the object: refuse to adopt its fd
        peer.join()


def test_asyncio_runs_on_fastsock_sockets(impl):
    async def main():
        a, b = impl.socketpair()
        r1, w1 = await asyncio.open_connection(sock=a)
        r2, w2 = await asyncio.open_connection(sock=b)
        w1.write(b"over asyncio")
        await w1.drain()
        data = await r2.readexactly(12)
        for w in (w1, w2):
            w.close()
            await w.wait_closed()
        return data

    assert asyncio.run(main()) == b"over asyncio"


def test_unix_path_socket(impl, tmp_path):
    path = os.fspath(tmp_path / "s.sock")
    with impl.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen()
        client = impl.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        client.connect(path)
        conn, _ = server.accept()
        with client, conn:
            client.sendall_many([b"unix", b" path"])
            assert conn.recv_exactly(9) == b"unix path"


def test_pickling_is_refused_like_stdlib(impl):
    import pickle

    a, b = impl.socketpair()
    with a, b, pytest.raises(TypeError):
        pickle.dumps(a)


def test_threads_share_nothing_but_module(impl):
    results = []

    def run():
        a, b = impl.socketpair()
        with a, b:
            a.sendall(b"t")
            results.append(b.recv_exactly(1))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [b"t"] * 4
