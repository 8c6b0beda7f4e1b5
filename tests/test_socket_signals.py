"""Signals while blocked in C: a raising handler interrupts the call (with its progress
attached), Ctrl-C is prompt, and a handler that returns lets the call resume (PEP 475)."""

from __future__ import annotations

import os
import select
import signal
import threading
import time

import pytest
from sockutil import small_buffers


def signal_once_sending(receiver, signum):
    """Send `signum` to the main thread once `receiver` has bytes queued, i.e. once the
    main thread's send call has moved some (a fixed delay can fire before the call starts
    on a loaded machine, and then no progress is attached). Returns the started thread."""
    def run():
        select.select([receiver], [], [], 10)
        signal.pthread_kill(threading.main_thread().ident, signum)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread

pytestmark = pytest.mark.timeout(20)


class Alarm(Exception):
    pass


@pytest.fixture
def alarm_raises():
    def handler(signum, frame):
        raise Alarm()

    old = signal.signal(signal.SIGALRM, handler)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def test_sigalrm_handler_raising_in_blocked_recv(impl, alarm_raises):
    a, b = impl.socketpair()
    with a, b:
        a.sendall(b"ab")
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Alarm) as info:
            b.recv_exactly(10)  # blocks: only 2 of 10 bytes will ever come
        assert info.value.bytes_received == 2
        assert info.value.partial == b"ab"


def test_sigalrm_handler_raising_in_blocked_recv_into(impl, alarm_raises):
    a, b = impl.socketpair()
    with a, b:
        a.sendall(b"abc")
        buf = bytearray(10)
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Alarm) as info:
            b.recv_into_exactly(buf)
        assert info.value.bytes_received == 3 and buf[:3] == b"abc"


def test_sigalrm_handler_raising_in_blocked_sendall(impl, alarm_raises):
    a, b = impl.socketpair()
    with a, b:
        small_buffers(a, b)
        data = os.urandom(8 << 20)  # nobody reads: sendall blocks once the buffers fill
        sender = signal_once_sending(b, signal.SIGALRM)
        with pytest.raises(Alarm) as info:
            a.sendall(data)
        sender.join()
        sent = info.value.bytes_sent
        assert 0 < sent < len(data)
        b.settimeout(5)
        assert b.recv_exactly(sent) == data[:sent]


def test_sigalrm_handler_raising_in_blocked_sendall_many(impl, alarm_raises):
    a, b = impl.socketpair()
    with a, b:
        small_buffers(a, b)
        sender = signal_once_sending(b, signal.SIGALRM)
        with pytest.raises(Alarm) as info:
            a.sendall_many([b"x" * 1_000_000] * 8)
        sender.join()
        assert 0 < info.value.bytes_sent < 8_000_000


def test_handler_that_returns_lets_the_call_resume(impl):
    calls = []
    old = signal.signal(signal.SIGALRM, lambda s, f: calls.append(s))
    a, b = impl.socketpair()
    try:
        with a, b:
            b.settimeout(5)  # a deadline, resumed with the remaining time after each signal
            signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)  # repeats while we are blocked
            sender = threading.Timer(0.3, lambda: a.sendall(b"late data!"))
            sender.start()
            assert b.recv_exactly(10) == b"late data!"
            sender.join()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert len(calls) >= 3, "the handlers ran while the call was blocked"


def test_keyboard_interrupt_is_prompt_while_blocked_in_recv(impl):
    a, b = impl.socketpair()
    with a, b:
        killer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
        killer.start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt) as info:
            b.recv_exactly(1)  # blocks forever without the signal
        killer.join()
        assert time.monotonic() - start < 5
        assert info.value.bytes_received == 0


def test_keyboard_interrupt_while_blocked_in_sendall(impl):
    a, b = impl.socketpair()
    with a, b:
        small_buffers(a, b)
        killer = signal_once_sending(b, signal.SIGINT)
        with pytest.raises(KeyboardInterrupt) as info:
            a.sendall(b"y" * (8 << 20))
        killer.join()
        assert info.value.bytes_sent > 0
