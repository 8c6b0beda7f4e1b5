"""Partial progress is never hidden: EOF, timeouts (deadlines for the whole call), would-block,
resets and bad input give clear errors that say how much was done, on both backends."""

from __future__ import annotations

import errno
import os
import socket as stdsocket
import struct
import time

import pytest
from sockutil import Peer, make_pair, small_buffers

import fastsock

pytestmark = pytest.mark.timeout(30)


# --- EOF mid-read ---------------------------------------------------------------------------

def test_eof_mid_recv_exactly_keeps_partial(impl):
    a, b = impl.socketpair()
    with a, b:
        a.sendall(b"abc")
        a.shutdown(stdsocket.SHUT_WR)
        with pytest.raises(fastsock.IncompleteReadError) as info:
            b.recv_exactly(10)
        assert isinstance(info.value, EOFError)
        assert info.value.partial == b"abc"
        assert info.value.expected == 10


def test_eof_mid_recv_into_exactly_keeps_partial(impl):
    a, b = impl.socketpair()
    with a, b:
        a.sendall(b"abcd")
        a.close()
        buf = bytearray(8)
        with pytest.raises(fastsock.IncompleteReadError) as info:
            b.recv_into_exactly(buf)
        assert info.value.partial == b"abcd" and info.value.expected == 8
        assert buf[:4] == b"abcd"


def test_clean_eof_before_any_byte(impl):
    a, b = impl.socketpair()
    with b:
        a.close()
        with pytest.raises(fastsock.IncompleteReadError) as info:
            b.recv_exactly(4)
        assert info.value.partial == b""


def test_hostile_size_is_not_allocated_up_front(impl):
    a, b = impl.socketpair()
    with a, b:
        # A peer announces 1 TiB (e.g. a forged length prefix), sends 10 bytes and leaves.
        a.sendall(struct.pack(">Q", 1 << 40) + b"0123456789")
        a.close()
        (size,) = struct.unpack(">Q", b.recv_exactly(8))
        with pytest.raises(fastsock.IncompleteReadError) as info:
            b.recv_exactly(size)  # would be a MemoryError if allocated eagerly
        assert info.value.partial == b"0123456789" and info.value.expected == 1 << 40


# --- timeouts are deadlines -----------------------------------------------------------------

def test_timeout_is_a_deadline_for_the_whole_recv(impl):
    a, b = impl.socketpair()
    stop = time.monotonic() + 5

    def dribble():  # one byte every 20 ms: a per-chunk timeout would never fire
        sent = 0
        while time.monotonic() < stop:
            try:
                a.sendall(b"x")
            except OSError:
                return sent
            sent += 1
            time.sleep(0.02)
        return sent

    with a, b:
        b.settimeout(0.3)
        peer = Peer(dribble)
        start = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            b.recv_exactly(10_000)
        elapsed = time.monotonic() - start
        assert elapsed < 2.5, "the timeout must bound the whole call, not each recv"
        got = info.value.bytes_received
        assert 0 < got < 10_000
        assert info.value.partial == b"x" * got
        a.close()
        peer.join()


def test_recv_into_exactly_timeout_keeps_bytes_in_buffer_and_resumes(impl):
    a, b = impl.socketpair()
    with a, b:
        a.sendall(b"hello")
        b.settimeout(0.1)
        buf = bytearray(10)
        with pytest.raises(TimeoutError) as info:
            b.recv_into_exactly(buf)
        assert info.value.bytes_received == 5 and buf[:5] == b"hello"
        a.sendall(b"world")
        view = memoryview(buf)[5:]
        assert b.recv_into_exactly(view) == 5
        assert buf == b"helloworld"
        assert b.gettimeout() == 0.1  # the socket's own timeout is untouched


def test_sendall_timeout_reports_bytes_sent(impl):
    a, b = impl.socketpair()
    with a, b:
        small_buffers(a, b)
        a.settimeout(0.2)
        data = os.urandom(4 << 20)  # far more than the peer's buffers hold; nobody reads
        with pytest.raises(TimeoutError) as info:
            a.sendall(data)
        sent = info.value.bytes_sent
        assert 0 < sent < len(data)
        # the bytes reported are exactly the bytes the peer can read
        b.settimeout(5)
        assert b.recv_exactly(sent) == data[:sent]


def test_sendall_many_timeout_reports_bytes_sent(impl):
    a, b = impl.socketpair()
    with a, b:
        small_buffers(a, b)
        a.settimeout(0.2)
        parts = [os.urandom(100_000) for _ in range(40)]
        with pytest.raises(TimeoutError) as info:
            a.sendall_many(parts)
        sent = info.value.bytes_sent
        assert 0 < sent < 4_000_000
        b.settimeout(5)
        assert b.recv_exactly(sent) == b"".join(parts)[:sent]


# --- non-blocking sockets -------------------------------------------------------------------

def test_nonblocking_recv_exactly_nothing_there(impl):
    a, b = impl.socketpair()
    with a, b:
        b.setblocking(False)
        with pytest.raises(BlockingIOError) as info:
            b.recv_exactly(4)
        assert info.value.bytes_received == 0 and info.value.partial == b""


def test_nonblocking_recv_exactly_partial_is_not_lost(impl):
    a, b = impl.socketpair()
    with a, b:
        b.setblocking(False)
        a.sendall(b"abc")
        with pytest.raises(BlockingIOError) as info:
            b.recv_exactly(6)
        assert info.value.partial == b"abc" and info.value.bytes_received == 3
        a.sendall(b"def")
        assert b.recv_exactly(3) == b"def"


def test_nonblocking_sendall_reports_bytes_sent(impl):
    a, b = impl.socketpair()
    with a, b:
        small_buffers(a, b)
        a.setblocking(False)
        data = os.urandom(2 << 20)
        with pytest.raises(BlockingIOError) as info:
            a.sendall(data)
        sent = info.value.bytes_sent
        assert 0 < sent < len(data)
        assert info.value.characters_written == sent
        b.settimeout(5)
        assert b.recv_exactly(sent) == data[:sent]


def test_nonblocking_recv_into_exactly_would_block(impl):
    a, b = impl.socketpair()
    with a, b:
        b.settimeout(0)
        with pytest.raises(BlockingIOError):
            b.recv_into_exactly(bytearray(3))


# --- resets ---------------------------------------------------------------------------------

def _reset(sock):
    sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST instead of FIN


def test_reset_mid_recv_raises_connection_reset(impl):
    a, b = make_pair(impl, "tcp4")
    with b:
        a.sendall(b"part")
        time.sleep(0.05)  # let the bytes arrive before the RST
        _reset(a)
        with pytest.raises(ConnectionResetError) as info:
            b.recv_exactly(100)
        assert info.value.errno == errno.ECONNRESET
        assert info.value.bytes_received in (0, 4)
        assert info.value.partial == b"part"[: info.value.bytes_received]


def test_sendall_to_reset_peer_raises_without_sigpipe(impl):
    a, b = make_pair(impl, "tcp4")
    with a:
        _reset(b)
        time.sleep(0.05)
        with pytest.raises((ConnectionResetError, BrokenPipeError)) as info:
            for _ in range(100):  # the first send may still be accepted locally
                a.sendall(b"x" * 65536)
        assert hasattr(info.value, "bytes_sent")


def test_broken_pipe_on_unix_socket(impl):
    a, b = impl.socketpair()
    with a:
        b.close()
        with pytest.raises(BrokenPipeError):
            a.sendall(b"data")
        with pytest.raises(BrokenPipeError):
            a.sendall_many([b"da", b"ta"])


# --- bad input ------------------------------------------------------------------------------

def test_wrong_types_raise_type_error(impl):
    a, b = impl.socketpair()
    with a, b:
        with pytest.raises(TypeError):
            a.sendall("text")
        with pytest.raises(TypeError):
            a.sendall_many([b"ok", "text"])
        with pytest.raises(TypeError):
            a.sendall_many(b"not a list of buffers")
        with pytest.raises(TypeError):
            a.sendall_many(42)
        with pytest.raises(TypeError):
            b.recv_exactly("3")
        with pytest.raises(TypeError):
            b.recv_exactly(3.0)
        with pytest.raises(TypeError):
            b.recv_into_exactly(b"read-only")
        with pytest.raises(TypeError):
            b.recv_into_exactly(memoryview(bytearray(10))[::2])
        with pytest.raises(TypeError):
            a.sendall(b"x", "flags")
        with pytest.raises(BufferError):
            a.sendall(memoryview(bytearray(10))[::2])  # as the stdlib: not C-contiguous
        a.sendall(b"ok")  # nothing was sent by the failed calls
        assert b.recv_exactly(2) == b"ok"


def test_bad_sizes_raise_value_error(impl):
    a, b = impl.socketpair()
    with a, b:
        with pytest.raises(ValueError):
            b.recv_exactly(-1)
        with pytest.raises(ValueError):
            b.recv_into_exactly(bytearray(4), -1)
        with pytest.raises(ValueError):
            b.recv_into_exactly(bytearray(4), 5)
        with pytest.raises(OverflowError):
            b.recv_exactly(1 << 70)


def test_closed_socket_raises_ebadf(impl):
    a, b = impl.socketpair()
    a.close()
    b.close()
    for call in (lambda: a.sendall(b"x"), lambda: a.sendall(b""), lambda: a.sendall_many([b"x"]),
                 lambda: a.sendall_many([]), lambda: a.recv_exactly(1), lambda: a.recv_exactly(0),
                 lambda: a.recv_into_exactly(bytearray(1)), lambda: a.recv_into_exactly(bytearray())):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EBADF


# --- flags ----------------------------------------------------------------------------------

def test_msg_peek_is_refused_by_exact_reads(impl):
    a, b = impl.socketpair()
    with a, b:
        a.sendall(b"0123456789")
        with pytest.raises(ValueError):
            b.recv_exactly(10, stdsocket.MSG_PEEK)
        with pytest.raises(ValueError):
            b.recv_into_exactly(bytearray(10), 0, stdsocket.MSG_PEEK)
        assert b.recv_exactly(10) == b"0123456789"  # nothing consumed by the refused calls


def test_msg_dontwait_makes_one_call_nonblocking(impl):
    a, b = impl.socketpair()
    with a, b:
        a.sendall(b"abc")
        with pytest.raises(BlockingIOError) as info:
            b.recv_exactly(6, stdsocket.MSG_DONTWAIT)  # a blocking socket, but not this call
        assert info.value.partial == b"abc"
        assert b.gettimeout() is None
        small_buffers(a, b)
        with pytest.raises(BlockingIOError) as info:
            a.sendall(b"z" * (4 << 20), stdsocket.MSG_DONTWAIT)
        assert 0 < info.value.bytes_sent < 4 << 20
        with pytest.raises(BlockingIOError):
            a.sendall_many([b"z" * (1 << 20)] * 4, stdsocket.MSG_DONTWAIT)
        b.settimeout(2)
        a.settimeout(2)
        assert a.gettimeout() == 2  # restored after the flag's call


def test_sendall_many_copes_with_a_list_that_changes_afterwards(impl):
    a, b = impl.socketpair()
    with a, b:
        parts = [b"one", b"two"]
        assert a.sendall_many(parts) == 6
        parts.append(b"three")  # the call held no reference into the list's storage
        assert b.recv_exactly(6) == b"onetwo"


@pytest.mark.parametrize("how", ["recv_exactly", "recv_into_exactly", "stream"])
def test_receive_past_its_deadline_takes_what_is_there(impl, how):
    # The receive side of the rule below: past the deadline (a timeout far too short for any
    # wait), bytes already waiting are still taken; with nothing there it times out.
    a, b = impl.socketpair()
    with a, b:
        b.sendall(b"y" * 1000)
        a.settimeout(5)
        time.sleep(0.05)  # (the bytes are in a's receive queue: a socketpair is local)
        a.settimeout(1e-9)
        if how == "recv_exactly":
            assert a.recv_exactly(1000) == b"y" * 1000
            with pytest.raises(TimeoutError):
                a.recv_exactly(1)
        elif how == "recv_into_exactly":
            buf = bytearray(1000)
            assert a.recv_into_exactly(buf) == 1000 and buf == b"y" * 1000
            with pytest.raises(TimeoutError):
                a.recv_into_exactly(bytearray(1))
        else:
            with impl.Stream(a) as stream:
                assert stream.read_exactly(1000) == b"y" * 1000
                with pytest.raises(TimeoutError):
                    stream.read_exactly(1)


@pytest.mark.parametrize("how", ["sendall", "sendall_many"])
def test_send_with_a_timeout_tries_before_waiting(impl, how):
    # A send that fits goes out at once whatever the timeout: both backends try first and
    # wait only on would-block (the stdlib polls first; PyPy's sendmsg then sent nothing).
    # A timeout far too short for any wait shows it.
    a, b = impl.socketpair()
    with a, b:
        a.settimeout(1e-9)
        data = os.urandom(1000)
        for _ in range(3):
            if how == "sendall":
                a.sendall(data)
            else:
                assert a.sendall_many([data[:10], data[10:]]) == len(data)
        assert a.gettimeout() == 1e-9
        b.settimeout(5)
        assert b.recv_exactly(3 * len(data)) == 3 * data
