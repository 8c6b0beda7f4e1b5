"""Selector.select() and Poller.poll() against the standard library, side by side.

    python -m pytest bench/test_bench_selector.py --benchmark-only --benchmark-group-by=group

Each group is one (registered, ready) case; read the ratios between rows of a group.
Sockets are AF_UNIX socketpairs registered for READ; `ready` of them have one byte
waiting (never read), so every call sees the same ready set. Targets (issue 4):
Selector.select() >= 2x faster than selectors.EpollSelector in every case (C backend);
Poller.poll() >= 3x faster than select.epoll.poll() where many events are ready
(see the README for what the kernel's own epoll_wait cost leaves for that ratio).
"""

from __future__ import annotations

import importlib
import resource
import select
import selectors
import socket

import pytest

c = importlib.import_module("fastsock._c._speedups")
py = importlib.import_module("fastsock._py")

CASES = [(1_000, 10), (1_000, 1_000), (10_000, 10), (10_000, 1_000)]

SELECTORS = {
    "fastsock.Selector": lambda: c.Selector(),
    "fastsock.Selector(poll)": lambda: c.Selector(method="poll"),
    "selectors.EpollSelector": selectors.EpollSelector,
    "selectors.PollSelector": selectors.PollSelector,
    "fastsock.Selector(pure)": lambda: py.Selector(),
}


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}reg-{c[1]}ready")
def sockets(request):
    n, ready = request.param
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 500
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"needs {want} descriptors, hard RLIMIT_NOFILE is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    pairs = [socket.socketpair() for _ in range(n // 2)]
    socks = [s for p in pairs for s in p]
    for i in range(ready):  # make socks[i] readable: write into its peer
        pairs[i // 2][1 - i % 2].send(b"x")
    yield n, ready, socks
    for s in socks:
        s.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _rounds(n, ready):
    return 20 if n * ready >= 1_000_000 else 200


@pytest.mark.parametrize("name", list(SELECTORS))
def test_select(benchmark, sockets, name):
    n, ready, socks = sockets
    sel = SELECTORS[name]()
    try:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        assert len(sel.select(0)) == ready
        benchmark.group = f"select {n} registered, {ready} ready"
        benchmark.pedantic(sel.select, args=(0,), rounds=_rounds(n, ready), iterations=10, warmup_rounds=2)
    finally:
        sel.close()


def _epoll_loop(ep, n):
    def run():
        for _fd, _mask in ep.poll(0, n):
            pass
    return run


def _poller_loop(p):
    def run():
        for _fd, _mask in p.poll(0):
            pass
    return run


@pytest.mark.parametrize(
    "name", ["fastsock.Poller", "fastsock.Poller(poll)", "select.epoll", "select.epoll+translate"]
)
def test_poll(benchmark, sockets, name):
    """The raw pollers, each wrapped in the same loop over its (fd, mask) results.
    select.epoll+translate is the pure backend's Poller(method="epoll"): select.epoll.poll
    plus the Python loop that turns its masks into fastsock's (what Poller.poll returns)."""
    n, ready, socks = sockets
    if name == "select.epoll+translate":
        p = py.Poller(method="epoll")
        for s in socks:
            p.register(s, py.READ)
        run = _poller_loop(p)
    elif name == "select.epoll":
        p = select.epoll()
        for s in socks:
            p.register(s, select.EPOLLIN)
        run = _epoll_loop(p, n)
    else:
        p = c.Poller(method="poll" if name.endswith("(poll)") else None)
        for s in socks:
            p.register(s, c.READ)
        run = _poller_loop(p)
    try:
        run()
        benchmark.group = f"poll {n} registered, {ready} ready"
        benchmark.pedantic(run, rounds=_rounds(n, ready), iterations=10, warmup_rounds=2)
    finally:
        p.close()
