"""Helpers for the Poller and Selector tests (their fixtures, `method` and `pair`, are in
conftest.py): a TCP pair, a raised descriptor limit, the count of open descriptors."""

from __future__ import annotations

import os
import resource
import socket

import pytest

needs_proc_fd = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected (client, server side) pair of blocking stdlib TCP sockets on 127.0.0.1."""
    srv = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(srv.getsockname())
    peer, _ = srv.accept()
    srv.close()
    return cli, peer


def raise_nofile(want: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to `want` descriptors (skip the test if the hard limit
    is lower); returns the (soft, hard) limits to restore with resource.setrlimit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft, hard
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"needs {want} descriptors but the hard RLIMIT_NOFILE is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return soft, hard


def open_fd_count() -> int:
    """Descriptors this process has open now (needs /proc/self/fd: mark with needs_proc_fd)."""
    return len(os.listdir("/proc/self/fd"))
