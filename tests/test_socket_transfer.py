"""sendall / sendall_many / recv_exactly / recv_into_exactly move every byte, on both backends,
over AF_UNIX, TCP/IPv4 and TCP/IPv6, whatever the buffer type and however the peer splits it."""

from __future__ import annotations

import array
import os
import socket as stdsocket
import threading

import pytest
from sockutil import (
    TRANSPORTS,
    Peer,
    has_ipv6_loopback,
    make_pair,
    needs_tracemalloc,
    recv_all,
    small_buffers,
    tracemalloc,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=TRANSPORTS)
def pair(request, impl):
    if request.param == "tcp6" and not has_ipv6_loopback():
        pytest.skip("this host has no ::1")
    a, b = make_pair(impl, request.param)
    yield a, b
    a.close()
    b.close()


def test_sockets_are_backend_sockets(impl, pair):
    a, b = pair
    assert type(a) is impl.socket and type(b) is impl.socket
    assert isinstance(a, stdsocket.socket)


def test_sendall_recv_exactly_roundtrip(pair):
    a, b = pair
    data = os.urandom(300_000)
    peer = Peer(lambda: b.recv_exactly(len(data)))
    a.sendall(data)
    assert peer.join() == data


@pytest.mark.parametrize("size", [1, 64, 4096, 65536, 1 << 20])
def test_recv_into_exactly_sizes(pair, size):
    a, b = pair
    data = os.urandom(size)
    buf = bytearray(size)
    peer = Peer(lambda: b.recv_into_exactly(buf))
    a.sendall(data)
    assert peer.join() == size
    assert buf == data


def test_recv_into_exactly_nbytes_fills_prefix_only(pair):
    a, b = pair
    buf = bytearray(b"." * 10)
    a.sendall(b"abcd")
    assert b.recv_into_exactly(buf, 4) == 4
    assert buf == b"abcd......"


def test_peer_writes_one_byte_at_a_time(pair):
    a, b = pair
    data = os.urandom(500)

    def dribble():
        for i in range(len(data)):
            stdsocket.socket.send(a, data[i:i + 1])

    peer = Peer(dribble)
    assert b.recv_exactly(len(data)) == data
    peer.join()


def test_peer_reads_one_byte_at_a_time(pair):
    a, b = pair
    small_buffers(a, b)
    data = os.urandom(40_000)

    def trickle():
        out = bytearray()
        while len(out) < len(data):
            out += stdsocket.socket.recv(b, 1)
        return bytes(out)

    peer = Peer(trickle)
    a.sendall(data)
    assert peer.join() == data


def test_sendall_many_preserves_order_without_joining(pair):
    a, b = pair
    parts = [os.urandom(n) for n in (0, 1, 7, 4096, 0, 65536, 3, 200_000)]
    expected = b"".join(parts)
    peer = Peer(lambda: recv_all(b, len(expected)))
    assert a.sendall_many(parts) == len(expected)
    assert peer.join() == expected


def test_sendall_many_longer_than_iov_max(pair):
    a, b = pair
    parts = [bytes([i % 251]) * (1 + i % 5) for i in range(3000)]  # > IOV_MAX (1024)
    expected = b"".join(parts)
    peer = Peer(lambda: recv_all(b, len(expected)))
    assert a.sendall_many(parts) == len(expected)
    assert peer.join() == expected


def test_sendall_many_resumes_mid_buffer_after_partial_writes(pair):
    a, b = pair
    small_buffers(a, b)  # every sendmsg moves a few KiB, ending inside some buffer
    parts = [os.urandom(n) for n in (10_000, 3, 50_001, 1, 7_777, 120_000)] * 3
    expected = b"".join(parts)
    peer = Peer(lambda: recv_all(b, len(expected), chunk=999))
    assert a.sendall_many(iter(parts)) == len(expected)  # any iterable, not only lists
    assert peer.join() == expected


def test_zero_length_inputs(pair):
    a, b = pair
    assert a.sendall(b"") is None
    assert a.sendall_many([]) == 0
    assert a.sendall_many([b"", bytearray(), memoryview(b"")]) == 0
    assert b.recv_exactly(0) == b""
    assert b.recv_into_exactly(bytearray()) == 0
    a.sendall(b"z")
    assert b.recv_exactly(1) == b"z"  # nothing stray was sent by the empty calls


BUFFER_TYPES = {
    "bytes": lambda d: d,
    "bytearray": bytearray,
    "memoryview": memoryview,
    "memoryview-slice": lambda d: memoryview(b"xx" + d + b"yy")[2:-2],
    "array-int32": lambda d: array.array("i", d),
    "memoryview-2d": lambda d: memoryview(d).cast("B", (len(d) // 8, 8)),
}


@pytest.mark.parametrize("kind", sorted(BUFFER_TYPES))
def test_every_buffer_type_is_sent_without_conversion(pair, kind):
    a, b = pair
    data = os.urandom(4096)
    buf = BUFFER_TYPES[kind](data)
    a.sendall(buf)
    assert b.recv_exactly(len(data)) == data
    assert a.sendall_many([buf, buf]) == 2 * len(data)
    assert b.recv_exactly(2 * len(data)) == data * 2


@pytest.mark.parametrize("kind", ["bytearray", "array-int32", "memoryview-2d"])
def test_recv_into_exactly_any_writable_buffer(pair, kind):
    a, b = pair
    data = os.urandom(4096)
    target = {
        "bytearray": lambda: bytearray(4096),
        "array-int32": lambda: array.array("i", bytes(4096)),
        "memoryview-2d": lambda: memoryview(bytearray(4096)).cast("B", (512, 8)),
    }[kind]()
    a.sendall(data)
    assert b.recv_into_exactly(target) == 4096
    assert bytes(target) == data


def test_threads_each_with_their_own_socket(impl):
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            a, b = impl.socketpair()
            with a, b:
                for i in range(200):
                    msg = bytes([seed]) * (1 + (i * 37) % 3000)
                    a.sendall(msg)
                    assert b.recv_exactly(len(msg)) == msg
                    buf = bytearray(len(msg))
                    b.sendall_many([msg[:1], msg[1:]])
                    assert a.recv_into_exactly(buf) == len(msg) and buf == msg
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_large_recv_exactly_over_tcp_uses_lowat_and_restores_it(impl):
    a, b = make_pair(impl, "tcp4")
    with a, b:
        b.settimeout(20)  # a deadline: the poll()-based wait that uses SO_RCVLOWAT
        before = b.getsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVLOWAT)
        data = os.urandom(3 << 20)

        def send_slowly():
            for i in range(0, len(data), 100_000):
                a.sendall(data[i:i + 100_000])

        peer = Peer(send_slowly)
        assert b.recv_exactly(len(data)) == data
        peer.join()
        assert b.getsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVLOWAT) == before


def test_recv_exactly_larger_than_eager_limit(impl):
    a, b = impl.socketpair()
    with a, b:
        size = (16 << 20) + 12345  # beyond the eager allocation: grown as data arrives
        data = os.urandom(size)
        peer = Peer(lambda: a.sendall(data))
        assert b.recv_exactly(size) == data
        peer.join()


@needs_tracemalloc
def test_sendall_many_allocates_no_joined_copy(impl):
    a, b = make_pair(impl, "tcp4")
    with a, b:
        parts = [bytes([i]) * 65536 for i in range(64)]  # 4 MiB in all
        received = bytearray(64 * 65536)  # the reader allocates nothing while traced

        def read_into():
            view, got = memoryview(received), 0
            while got < len(received):
                got += stdsocket.socket.recv_into(b, view[got:])

        tracemalloc.start()
        try:
            peer = Peer(read_into)
            assert a.sendall_many(parts) == 64 * 65536
            peer.join()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert received == b"".join(parts)
        assert peak < 256 * 1024, f"sendall_many allocated {peak} bytes: a joined copy would be 4 MiB"
