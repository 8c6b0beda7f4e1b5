"""fastsock.Poller on both backends (impl) and both poll methods (method).
The `method` and `pair` fixtures are in conftest.py, tcp_pair and the other helpers in pollutil.py."""

from __future__ import annotations

import errno
import gc
import resource
import select
import signal
import socket
import sys
import threading
import time

import pytest
from pollutil import needs_proc_fd, open_fd_count, raise_nofile, tcp_pair


@pytest.fixture
def poller(impl, method):
    p = impl.Poller(method=method)
    yield p
    p.close()


def drain(sock):
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        pass


def test_constants_match_epoll_values(impl):
    assert (impl.READ, impl.WRITE, impl.ERROR, impl.HANGUP) == (1, 4, 8, 16)
    if sys.platform.startswith("linux"):
        assert impl.READ == select.EPOLLIN == select.POLLIN
        assert impl.WRITE == select.EPOLLOUT and impl.ERROR == select.EPOLLERR
        assert impl.HANGUP == select.EPOLLHUP


def test_default_method(impl):
    with impl.Poller() as p:
        if impl.__name__.endswith("_speedups"):
            assert p.method == ("epoll" if "epoll" in impl.POLL_METHODS else "poll")
        else:
            best = "epoll" if hasattr(select, "epoll") else "poll" if hasattr(select, "poll") else "select"
            assert p.method == best
            assert p.method == impl.POLL_METHODS[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="epoll (the default) is Linux-only")
def test_default_refuses_a_regular_file_like_default_selector(impl, tmp_path):
    """Both defaults are epoll, which cannot watch a regular file: PermissionError, as
    selectors.DefaultSelector (not a registration that reports the file always ready)."""
    import selectors

    with open(tmp_path / "regular", "wb") as f:
        with selectors.DefaultSelector() as std, pytest.raises(PermissionError):
            std.register(f, selectors.EVENT_READ)
        with impl.Poller() as p:
            with pytest.raises(PermissionError):
                p.register(f, impl.READ)
            assert f.fileno() not in p and len(p) == 0
        with impl.Selector() as sel:
            with pytest.raises(PermissionError):
                sel.register(f, selectors.EVENT_READ)
            assert len(sel.get_map()) == 0


def test_bad_method(impl):
    with pytest.raises(ValueError):
        impl.Poller(method="kqueue-please")
    with pytest.raises(TypeError):
        impl.Poller(method=3)
    if "select" not in impl.POLL_METHODS:
        with pytest.raises(ValueError):
            impl.Poller(method="select")


def test_register_and_lookup(poller, pair, impl):
    a, b = pair
    assert len(poller) == 0 and a not in poller
    poller.register(a, impl.READ)
    poller.register(b.fileno(), impl.WRITE)
    assert len(poller) == 2
    assert a in poller and a.fileno() in poller and b in poller
    assert 999999 not in poller and -1 not in poller and "x" not in poller
    poller.unregister(a.fileno())
    poller.unregister(b)
    assert len(poller) == 0


def test_bad_input(poller, pair, impl):
    a, b = pair
    with pytest.raises(ValueError):
        poller.register(-1)
    with pytest.raises(ValueError):
        poller.register(object())
    with pytest.raises(ValueError):
        poller.register(a, 0x100)
    with pytest.raises(ValueError):
        poller.register(a, -1)
    with pytest.raises(TypeError):
        poller.register(a, "READ")
    with pytest.raises(KeyError):
        poller.unregister(a)
    with pytest.raises(KeyError):
        poller.modify(a, impl.READ)
    poller.register(a)
    with pytest.raises(KeyError):
        poller.register(a)
    with pytest.raises(KeyError):
        poller.register(a.fileno(), impl.WRITE)
    with pytest.raises(ValueError):
        poller.poll(0, max_events=0)
    with pytest.raises(ValueError):
        poller.poll(float("nan"))


def test_register_closed_fd_raises_ebadf(poller, impl):
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    b.close()
    with pytest.raises(OSError) as info:
        poller.register(fd, impl.READ)
    assert info.value.errno == errno.EBADF
    assert fd not in poller
    closed_sock = socket.socket()
    closed_sock.close()
    with pytest.raises(ValueError):  # fileno() is -1, as selectors reports it
        poller.register(closed_sock)


def test_closed_poller(impl, method, pair):
    p = impl.Poller(method=method)
    p.register(pair[0])
    p.close()
    p.close()
    assert p.closed and len(p) == 0
    for call in (lambda: p.poll(0), lambda: p.register(pair[1]), lambda: p.unregister(pair[0]),
                 lambda: p.modify(pair[0], impl.READ)):
        with pytest.raises(ValueError):
            call()
    with impl.Poller(method=method) as q:
        q.register(pair[0])
    assert q.closed


def test_level_triggered(poller, pair, impl):
    a, b = pair
    poller.register(a, impl.READ)
    assert poller.poll(0) == []
    b.send(b"hello")
    assert poller.poll(5) == [(a.fileno(), impl.READ)]
    assert poller.poll(0) == [(a.fileno(), impl.READ)]  # still readable: reported again
    drain(a)
    assert poller.poll(0) == []


def test_read_and_write_in_one_mask(poller, pair, impl):
    a, b = pair
    b.send(b"x")
    poller.register(a, impl.READ | impl.WRITE)
    assert poller.poll(5) == [(a.fileno(), impl.READ | impl.WRITE)]
    poller.modify(a, impl.WRITE)
    assert poller.poll(0) == [(a.fileno(), impl.WRITE)]


def test_edge_triggered(poller, pair, impl, method):
    a, b = pair
    poller.register(a, impl.READ, edge=True)
    assert poller.poll(0) == []
    b.send(b"one")
    assert poller.poll(5) == [(a.fileno(), impl.READ)]
    if method == "epoll":
        # no new arrival, not drained: epoll stays silent
        assert poller.poll(0) == []
        b.send(b"two")
        assert poller.poll(5) == [(a.fileno(), impl.READ)]
    else:
        # documented: the poll method reports level-triggered, a superset of the
        # edge-triggered events, so a program that drains until EAGAIN works unchanged
        assert poller.poll(0) == [(a.fileno(), impl.READ)]
    drain(a)
    assert poller.poll(0) == []
    b.send(b"three")
    assert poller.poll(5) == [(a.fileno(), impl.READ)]


def test_oneshot(poller, pair, impl):
    a, b = pair
    poller.register(a, impl.READ, oneshot=True)
    b.send(b"x")
    assert poller.poll(5) == [(a.fileno(), impl.READ)]
    assert poller.poll(0) == []  # disarmed although still readable
    b.send(b"y")
    assert poller.poll(0) == []
    poller.modify(a, impl.READ, oneshot=True)  # re-arm
    assert poller.poll(5) == [(a.fileno(), impl.READ)]
    assert poller.poll(0) == []
    poller.modify(a, impl.READ)  # back to level-triggered
    assert poller.poll(0) == [(a.fileno(), impl.READ)]
    poller.unregister(a)
    assert poller.poll(0) == []


def test_oneshot_disarmed_then_unregistered(poller, impl):
    socks = [socket.socketpair() for _ in range(3)]
    try:
        for x, _ in socks:
            poller.register(x, impl.WRITE, oneshot=True)
        assert len(poller.poll(0)) == 3
        poller.unregister(socks[0][0])  # disarmed entries move around inside the poller
        poller.modify(socks[2][0], impl.WRITE)
        assert poller.poll(0) == [(socks[2][0].fileno(), impl.WRITE)]
        poller.modify(socks[1][0], impl.WRITE)
        assert sorted(poller.poll(0)) == sorted((s[0].fileno(), impl.WRITE) for s in socks[1:])
    finally:
        for x, y in socks:
            x.close()
            y.close()


def test_timeout_zero_and_small(poller, pair, impl):
    a, b = pair
    poller.register(a, impl.READ)
    assert poller.poll(0) == []
    assert poller.poll(0.0) == []
    t0 = time.monotonic()
    assert poller.poll(0.0301) == []
    # rounded UP to whole ms: never shorter than asked (a lower bound only)
    assert time.monotonic() - t0 >= 0.030
    assert poller.poll(1e-9) == []  # rounds up to 1 ms, never to 0 (a busy loop)


def test_empty_poller_timeout(poller):
    assert poller.poll(0) == []
    assert poller.poll(0.001) == []


def test_timeout_none_wakes_from_other_thread(poller, pair, impl):
    a, b = pair
    poller.register(a, impl.READ)
    timer = threading.Timer(0.05, b.send, (b"wake",))
    timer.start()
    try:
        assert poller.poll(None) == [(a.fileno(), impl.READ)]
        drain(a)
        timer2 = threading.Timer(0.05, b.send, (b"wake",))
        timer2.start()
        assert poller.poll(-1) == [(a.fileno(), impl.READ)]  # negative blocks too
        timer2.join()
    finally:
        timer.join()


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
def test_signal_during_poll_runs_handler_and_resumes(poller, pair, impl):
    a, b = pair
    poller.register(a, impl.READ)
    calls = []
    old = signal.signal(signal.SIGALRM, lambda *args: calls.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        t0 = time.monotonic()
        assert poller.poll(0.3) == []
        elapsed = time.monotonic() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert calls == [1]
    assert elapsed >= 0.3  # retried with the remaining time (PEP 475), not returned early


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
def test_signal_handler_exception_propagates(poller, pair, impl):
    a, b = pair
    poller.register(a, impl.READ)

    class Stop(Exception):
        pass

    def handler(*args):
        raise Stop

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Stop):
            poller.poll(None)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    b.send(b"x")  # the poller still works afterwards
    assert poller.poll(5) == [(a.fileno(), impl.READ)]


def test_hangup_on_peer_close(poller, impl):
    a, b = tcp_pair()  # TCP: a peer's close is a half-close seen from here (unlike AF_UNIX)
    try:
        poller.register(a, impl.READ | impl.HANGUP)
        b.close()
        [(fd, mask)] = poller.poll(5)
        assert fd == a.fileno()
        assert mask == impl.READ | impl.HANGUP  # EOF is readable; RDHUP is HANGUP
        poller.modify(a, impl.READ)  # without HANGUP asked: a half-close is plain READ (EOF)
        assert poller.poll(0) == [(a.fileno(), impl.READ)]
        a.shutdown(socket.SHUT_WR)  # now both directions are down: a full hang-up
        [(fd, mask)] = poller.poll(5)
        assert mask & impl.HANGUP
    finally:
        a.close()


def test_hangup_on_unix_peer_close(poller, impl):
    a, b = socket.socketpair()
    try:
        poller.register(a, impl.READ)
        b.close()  # AF_UNIX: the peer's close hangs up both directions at once
        [(fd, mask)] = poller.poll(5)
        assert fd == a.fileno() and mask & impl.READ and mask & impl.HANGUP
    finally:
        a.close()


def test_hangup_and_error_after_reset(poller, impl):
    cli, peer = tcp_pair()
    try:
        poller.register(cli, impl.WRITE)
        peer.close()
        cli.send(b"data")  # answered with RST by the closed peer
        mask = 0
        for _ in range(100):  # bounded: the RST arrives within a few ms on loopback
            ready = poller.poll(0.05)
            mask = ready[0][1] if ready else 0
            if mask & impl.HANGUP:
                break
        assert mask & impl.HANGUP and mask & impl.ERROR
    finally:
        cli.close()


def test_fd_closed_while_registered(poller, impl, method):
    a, b = socket.socketpair()
    fd = a.fileno()
    poller.register(fd, impl.READ)
    a.close()
    b.close()
    ready = poller.poll(0)
    if method == "poll":
        assert ready == [(fd, impl.ERROR)]  # POLLNVAL: reported until unregistered
        assert poller.poll(0) == [(fd, impl.ERROR)]
    else:
        assert ready == []  # the kernel removed it from the epoll set
    with pytest.raises(OSError):
        poller.modify(fd, impl.READ)
    poller.unregister(fd)  # never raises for a closed descriptor
    assert poller.poll(0) == [] and len(poller) == 0


def test_max_events_caps_and_rotates(poller, impl):
    socks = [socket.socketpair() for _ in range(5)]
    try:
        fds = {x.fileno() for x, _ in socks}
        for x, _ in socks:
            poller.register(x, impl.WRITE)
        assert {fd for fd, _ in poller.poll(0)} == fds
        seen = set()
        for _ in range(10):
            ready = poller.poll(0, max_events=2)
            assert len(ready) == 2
            seen.update(fd for fd, _ in ready)
        assert seen == fds  # nobody starves behind the cap
    finally:
        for x, y in socks:
            x.close()
            y.close()


@pytest.mark.timeout(60)
def test_modify_from_another_thread_while_polling(poller, impl):
    """Documented behaviour: epoll sees the change at once; the poll method at the next
    poll() call (the wake-up byte ends the current one). Never a crash."""
    a, b = socket.socketpair()
    wake_r, wake_w = socket.socketpair()
    try:
        poller.register(a, impl.READ)  # nothing to read: the poll blocks
        poller.register(wake_r, impl.READ)
        seen = []

        def waiter():
            for _ in range(20):  # bounded
                ready = poller.poll(5)
                if (a.fileno(), impl.WRITE) in ready:
                    seen.append(True)
                    return

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.05)
        poller.modify(a, impl.WRITE)
        wake_w.send(b"!")
        t.join(30)
        assert not t.is_alive() and seen == [True]
    finally:
        for s in (a, b, wake_r, wake_w):
            s.close()


@pytest.mark.timeout(60)
def test_concurrent_register_unregister_stress(poller, impl):
    pairs = [socket.socketpair() for _ in range(50)]
    stop = threading.Event()
    errors = []

    def churn():
        try:
            for i in range(2000):
                if stop.is_set():
                    return
                x = pairs[i % 50][0]
                if x in poller:
                    poller.unregister(x)
                else:
                    poller.register(x, impl.WRITE)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        t = threading.Thread(target=churn)
        t.start()
        registered = {p[0].fileno() for p in pairs}
        deadline = time.monotonic() + 10
        while t.is_alive() and time.monotonic() < deadline:
            for fd, mask in poller.poll(0.001):
                assert fd in registered and mask == impl.WRITE
        stop.set()
        t.join(30)
        assert not errors
    finally:
        for x, y in pairs:
            x.close()
            y.close()


@pytest.mark.timeout(30)
def test_two_threads_polling_and_close_while_polling(impl, method):
    p = impl.Poller(method=method)
    a, b = socket.socketpair()
    try:
        p.register(a, impl.READ)
        results = []

        def waiter():
            try:
                results.append(p.poll(0.5))
            except ValueError as exc:  # closed meanwhile: documented
                results.append(exc)

        threads = [threading.Thread(target=waiter) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.05)
        p.close()
        for t in threads:
            t.join(10)
        assert len(results) == 2
        for r in results:
            assert r == [] or isinstance(r, ValueError)
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(120)
def test_ten_thousand_sockets(poller, impl):
    soft, hard = raise_nofile(10_000 + 200)
    pairs = []
    try:
        for _ in range(5_000):
            pairs.append(socket.socketpair())
        for x, y in pairs:
            poller.register(x, impl.READ)
            poller.register(y, impl.READ)
        assert len(poller) == 10_000
        assert poller.poll(0) == []
        for _, y in pairs[::50]:  # 100 become readable
            y.send(b"x")
        ready = poller.poll(5)
        assert sorted(ready) == sorted((x.fileno(), impl.READ) for x, _ in pairs[::50])
        assert len(poller.poll(0, max_events=7)) == 7
    finally:
        for x, y in pairs:
            x.close()
            y.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@needs_proc_fd
def test_no_descriptor_leak(impl, method):
    before = open_fd_count()
    for _ in range(200):
        p = impl.Poller(method=method)  # dropped without close(): dealloc releases
        del p
    for _ in range(200):
        with impl.Poller(method=method):
            pass
    gc.collect()
    assert open_fd_count() <= before


def test_select_method(impl):
    """The pure backend's select() fallback (for platforms without poll); the compiled
    backend has no select path and refuses the name."""
    if "select" not in impl.POLL_METHODS:
        with pytest.raises(ValueError):
            impl.Poller(method="select")
        return
    a, b = socket.socketpair()
    a.setblocking(False)
    with impl.Poller(method="select") as p:
        p.register(a, impl.READ | impl.WRITE, oneshot=True)
        assert p.poll(0) == [(a.fileno(), impl.WRITE)]
        assert p.poll(0) == []
        b.send(b"x")
        p.modify(a, impl.READ)
        assert p.poll(1) == [(a.fileno(), impl.READ)]
        fd = a.fileno()
        a.close()
        assert p.poll(0) == [(fd, impl.ERROR)]  # closed while registered
        p.unregister(fd)
        with pytest.raises(ValueError):  # select() cannot take descriptors past FD_SETSIZE
            p.register(5000)
    b.close()


def test_argument_types(poller, impl):
    with pytest.raises(TypeError):
        poller.poll("1")
    with pytest.raises(TypeError):
        poller.poll(0, max_events=2.5)
    assert poller.poll(0, max_events=3) == []
    assert poller.poll(0.0) == [] and poller.poll(0) == []


def test_modify_fd_closed_and_reused_while_registered(poller, impl, method):
    # The registration outlives the descriptor; a new socket gets the same number. modify()
    # of a registered fd is not a KeyError: epoll's kernel set no longer holds that number
    # (FileNotFoundError, ENOENT), the poll method just watches the new descriptor.
    a, b = socket.socketpair()
    fd = a.fileno()
    poller.register(fd, impl.READ)
    a.close()
    b.close()
    c, d = socket.socketpair()
    try:
        if c.fileno() != fd:
            pytest.skip("the descriptor number was not reused")
        assert fd in poller
        if method == "epoll":
            with pytest.raises(FileNotFoundError):
                poller.modify(fd, impl.WRITE)
        else:
            poller.modify(fd, impl.WRITE)
            assert poller.poll(0) == [(fd, impl.WRITE)]
        with pytest.raises(KeyError):
            poller.modify(d, impl.READ)  # never registered
        poller.unregister(fd)
        assert len(poller) == 0
    finally:
        c.close()
        d.close()
