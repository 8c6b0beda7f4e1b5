"""fastsock.Selector on both backends (impl) and both poll methods: what CPython's suite
(test_selector_cpython.py) does not cover. The `method` and `pair` fixtures are in
conftest.py, tcp_pair and the other helpers in pollutil.py."""

from __future__ import annotations

import errno
import gc
import resource
import selectors
import socket
import threading
import time
import weakref
from selectors import EVENT_READ, EVENT_WRITE

import pytest
from pollutil import needs_proc_fd, open_fd_count, raise_nofile, tcp_pair


@pytest.fixture
def sel(impl, method):
    s = impl.Selector(method=method)
    yield s
    s.close()


def test_is_a_base_selector(sel, method):
    assert isinstance(sel, selectors.BaseSelector)
    assert sel.method == method


def test_default_selector_code_unchanged(impl):
    """The HOWTO's non-blocking echo server, written for selectors.DefaultSelector, run on
    fastsock.Selector: only the constructor differs."""
    sel = impl.Selector()
    srv = socket.create_server(("127.0.0.1", 0))
    srv.setblocking(False)
    sel.register(srv, EVENT_READ, data=None)
    clients = [socket.create_connection(srv.getsockname()) for _ in range(5)]
    replies = {}
    try:
        for i, c in enumerate(clients):
            c.sendall(b"ping %d" % i)
        for _ in range(200):  # bounded event loop
            for key, mask in sel.select(timeout=1):
                if key.data is None:
                    conn, _ = key.fileobj.accept()
                    conn.setblocking(False)
                    sel.register(conn, EVENT_READ, data=b"")
                elif mask & EVENT_READ:
                    data = key.fileobj.recv(1024)
                    if data:
                        key.fileobj.sendall(data)
                    else:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
            for i, c in enumerate(clients):
                if i not in replies:
                    c.setblocking(False)
                    try:
                        replies[i] = c.recv(1024)
                    except BlockingIOError:
                        pass
            if len(replies) == len(clients):
                break
        assert replies == {i: b"ping %d" % i for i in range(5)}
    finally:
        for c in clients:
            c.close()
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()


def test_bad_input_as_selectors(sel, pair):
    a, b = pair
    with pytest.raises(ValueError):
        sel.register(a, 0)
    with pytest.raises(ValueError):
        sel.register(a, 4)
    with pytest.raises(ValueError):
        sel.register(-1, EVENT_READ)
    with pytest.raises(ValueError):
        sel.register(object(), EVENT_READ)
    with pytest.raises(KeyError):
        sel.unregister(a)
    with pytest.raises(KeyError):
        sel.get_key(a)
    key = sel.register(a, EVENT_READ)
    with pytest.raises(KeyError):
        sel.register(a, EVENT_WRITE)
    with pytest.raises(ValueError):
        sel.modify(a, 0)
    assert sel.get_key(a) is key  # a refused modify leaves the key alone


def test_register_closed_fd(sel):
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    b.close()
    with pytest.raises(OSError) as info:
        sel.register(fd, EVENT_READ)
    assert info.value.errno == errno.EBADF
    with pytest.raises(KeyError):  # nothing left behind
        sel.get_key(fd)
    assert len(sel.get_map()) == 0


def test_fd_closed_while_registered(sel, method):
    """Documented: epoll drops a closed descriptor silently; poll reports it ready for
    every event it was registered for (POLLNVAL), until it is unregistered."""
    a, b = socket.socketpair()
    key = sel.register(a, EVENT_READ | EVENT_WRITE, "d")
    fd = a.fileno()
    a.close()
    b.close()
    ready = sel.select(0)
    if method == "poll":
        assert ready == [(key, EVENT_READ | EVENT_WRITE)]
    else:
        assert ready == []
    assert sel.unregister(a) is key  # the closed socket object is still found
    assert sel.select(0) == []
    assert fd not in sel.get_map()


def test_modify_updates_what_select_returns(sel, pair):
    a, b = pair
    b.send(b"x")
    k1 = sel.register(a, EVENT_READ, 1)
    assert sel.select(0) == [(k1, EVENT_READ)]
    k2 = sel.modify(a, EVENT_READ, 2)
    assert k2.data == 2 and sel.select(0) == [(k2, EVENT_READ)]
    k3 = sel.modify(a, EVENT_READ | EVENT_WRITE, 3)
    assert sel.select(0) == [(k3, EVENT_READ | EVENT_WRITE)]
    assert sel.modify(a, EVENT_READ | EVENT_WRITE, 3) is k3  # nothing changed: same key
    sel.unregister(a)
    assert sel.select(0) == []
    k4 = sel.register(a.fileno(), EVENT_WRITE, 4)
    assert sel.select(0) == [(k4, EVENT_WRITE)]
    assert k4.fileobj == a.fileno()


def test_error_wakes_readers_and_writers(sel):
    cli, peer = tcp_pair()
    try:
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()  # linger 0: RST, so cli sees an error
        key = sel.register(cli, EVENT_READ | EVENT_WRITE)
        ready = sel.select(5)
        assert ready == [(key, EVENT_READ | EVENT_WRITE)]
    finally:
        cli.close()


def test_closed_selector(impl, method, pair):
    s = impl.Selector(method=method)
    s.register(pair[0], EVENT_READ)
    mapping = s.get_map()
    s.close()
    s.close()
    assert s.get_map() is None
    with pytest.raises(RuntimeError):
        s.get_key(pair[0])
    with pytest.raises(KeyError):
        mapping[pair[0]]
    with pytest.raises(ValueError):
        s.select(0)
    with pytest.raises(ValueError):
        s.register(pair[1], EVENT_READ)
    with pytest.raises(KeyError):
        s.unregister(pair[0])


def test_select_timeouts(sel, pair):
    a, b = pair
    sel.register(a, EVENT_READ)
    assert sel.select(0) == []
    assert sel.select(-5) == []  # <= 0 polls
    assert sel.select(0.001) == []
    timer = threading.Timer(0.05, b.send, (b"x",))
    timer.start()
    try:
        [(key, events)] = sel.select(None)
        assert key.fileobj is a and events == EVENT_READ
    finally:
        timer.join()


@pytest.mark.timeout(120)
def test_ten_thousand_sockets(sel):
    soft, hard = raise_nofile(10_000 + 200)
    pairs = []
    try:
        for _ in range(5_000):
            pairs.append(socket.socketpair())
        keys = {}
        for x, y in pairs:
            keys[x] = sel.register(x, EVENT_READ, "x")
            sel.register(y, EVENT_READ, "y")
        assert len(sel.get_map()) == 10_000
        assert sel.select(0) == []
        for _, y in pairs[::10]:
            y.send(b"!")
        ready = sel.select(5)
        assert sorted(ready, key=lambda kv: kv[0].fd) == sorted(
            ((keys[x], EVENT_READ) for x, _ in pairs[::10]), key=lambda kv: kv[0].fd
        )
        for x, y in pairs:
            sel.unregister(x)
            sel.unregister(y)
        assert len(sel.get_map()) == 0
    finally:
        for x, y in pairs:
            x.close()
            y.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timeout(60)
def test_modify_from_another_thread(sel):
    a, b = socket.socketpair()
    wake_r, wake_w = socket.socketpair()
    try:
        key = sel.register(a, EVENT_READ)
        sel.register(wake_r, EVENT_READ)
        seen = []

        def waiter():
            # Bounded by time, not by a count of select() calls: the modify may land between
            # the kernel's report and the key lookup of one call; a later call then sees it.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                for k, ev in sel.select(1):
                    if k.fileobj is a and ev == EVENT_WRITE:
                        seen.append(k)
                        return

        t = threading.Thread(target=waiter)
        t.start()
        new = sel.modify(a, EVENT_WRITE, "new")
        wake_w.send(b"!")
        t.join(30)
        assert not t.is_alive() and seen == [new] and new is not key
    finally:
        for s in (a, b, wake_r, wake_w):
            s.close()


def test_unclosed_selector_in_a_cycle_is_collected(impl, method):
    """Key data that refers back to the selector (as asyncio's handles do, through the
    loop) must not keep an unclosed selector, and its epoll descriptor, alive forever."""
    a, b = socket.socketpair()
    try:
        s = impl.Selector(method=method)
        s.register(a, EVENT_READ, data=[s])
        b.send(b"x")
        assert len(s.select(0)) == 1  # also fills select()'s cached (key, events) pair
        ref = weakref.ref(s)
        del s
        gc.collect()
        assert ref() is None
    finally:
        a.close()
        b.close()


@needs_proc_fd
def test_no_descriptor_leak(impl, method):
    before = open_fd_count()
    for _ in range(100):
        s = impl.Selector(method=method)
        del s
    for _ in range(100):
        with impl.Selector(method=method):
            pass
    gc.collect()
    assert open_fd_count() <= before
