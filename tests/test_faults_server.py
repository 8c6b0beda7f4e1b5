"""impl.Server through the fault proxy, both backends: frames (and raw bytes) are identical
under any segmentation and delay of requests and replies; a connection whose requests or
replies are truncated, reset or stalled is closed with the documented reason
(IncompleteReadError with the exact partial, ConnectionResetError, FrameTimeout,
IdleTimeout), and only that one: the other connections of the same Server keep working."""

from __future__ import annotations

import contextlib
import errno
import random
import threading
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any, Optional

import pytest
from faultproxy import CLEAN, Fault, FaultProxy, Faults
from serverutil import serving
from test_faults_stream import BOUND, FRAMINGS, SPLITS, cut_error, encode, matrix, payloads_for

from fastsock import IncompleteReadError

pytestmark = pytest.mark.timeout(60)

#: The index of the faulty connection among the three each test opens (0 and 2 are clean).
FAULTY = 1


class Log:
    """What the Server saw, per connection (keyed by the peer address it reports): the
    frames its handler got, and the on_close reason."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames: dict[Any, list[Any]] = {}
        self.closed: dict[Any, Optional[BaseException]] = {}
        self.silent: set[Any] = set()  # peers whose frames get no reply

    def handler(self, conn: Any, frame: Any) -> Any:
        with self.lock:
            self.frames.setdefault(conn.peer, []).append(frame)
            return None if conn.peer in self.silent else frame

    def on_close(self, conn: Any, exc: Optional[BaseException]) -> None:
        with self.lock:
            self.closed[conn.peer] = exc

    def is_closed(self, peer: Any) -> bool:
        with self.lock:
            return peer in self.closed


@contextlib.contextmanager
def proxied_server(impl: ModuleType, plan: Any, log: Log, handler: Any = None,
                   **options: Any) -> Iterator[tuple[Any, FaultProxy]]:
    """(server, proxy): impl.Server(handler or log.handler) serving in a thread, the proxy in
    front of it."""
    with serving(impl, handler or log.handler, on_close=log.on_close, **options) as (server, addr), \
            FaultProxy(addr, plan) as proxy:
        yield server, proxy


def clients(impl: ModuleType, proxy: FaultProxy, framing: Any, count: int = 3) -> list[Any]:
    """`count` client Streams through the proxy, connected in order (link i is client i)."""
    out = []
    try:
        for i in range(count):
            out.append(impl.connect(proxy.address, framing=framing, timeout=BOUND))
            proxy.link(i)
    except BaseException:
        for c in out:
            c.close()
        raise
    return out


def exchange(client: Any, payloads: list[Any]) -> list[Any]:
    """Send `payloads` as frames and read as many replies."""
    client.write_frames(payloads)
    client.flush()
    return [client.read_frame() for _ in payloads]


def only_faulty_closed(log: Log, proxy: FaultProxy) -> None:
    """The clean connections (0 and 2) are still open on the server."""
    for i in (0, 2):
        assert not log.is_closed(proxy.links[i].upstream_name), f"connection {i} was closed: {log.closed}"


# ---- segmentation --------------------------------------------------------------------------


@pytest.mark.parametrize("split", list(SPLITS), ids=list(SPLITS))
@pytest.mark.parametrize("name,make", matrix(FRAMINGS), ids=[n for n, _ in matrix(FRAMINGS)])
def test_frames_identical_under_any_segmentation(impl, name, make, split):
    # Three clients at once, each request and reply cut one byte (or a random few) per send.
    framing = make(impl)
    cut = SPLITS[split]

    def plan(i: int) -> Faults:
        return Faults(up=Fault(split=cut, seed=10 + i), down=Fault(split=cut, seed=20 + i))

    rng = random.Random(f"server/{name}/{split}")
    per_client = [payloads_for(name, rng, 8 if split == "1-byte" else 30, 60 if split == "1-byte" else 700)
                  for _ in range(3)]
    log = Log()
    with proxied_server(impl, plan, log, framing=framing) as (server, proxy):
        streams = clients(impl, proxy, framing)
        try:
            for s, payloads in zip(streams, per_client):  # all requests first: they interleave
                s.write_frames(payloads)
                s.flush()
            got = [[s.read_frame() for _ in payloads] for s, payloads in zip(streams, per_client)]
        finally:
            for s in streams:
                s.close()
        proxy.wait(lambda: len(log.closed) == 3, "the three connections closed")
    assert got == per_client
    assert list(log.closed.values()) == [None, None, None]
    for link, payloads in zip(proxy.links, per_client):
        wire = sum(len(encode(framing, p)) for p in payloads)
        assert log.frames[link.upstream_name] == payloads
        for flow in link.flows():
            assert flow.forwarded == flow.received == wire and flow.balanced(), flow
            if split == "1-byte":
                assert flow.sends == wire


@pytest.mark.parametrize("mode", ["batch", "raw"])
def test_batch_and_raw_modes_under_segmentation(impl, mode):
    framing = impl.LengthPrefix(2)
    rng = random.Random(mode)
    payloads = payloads_for("LengthPrefix(2,little)", rng, 40, 300)
    wire = b"".join(encode(framing, p) for p in payloads)

    def raw(conn: Any, data: Any) -> int:
        conn.write(bytes(data))  # echo whatever came, however it was cut
        return len(data)

    handler = {"batch": lambda conn, frames: list(frames), "raw": raw}[mode]
    plan = Faults(up=Fault(split=(1, 13), seed=30), down=Fault(split=1))
    log = Log()
    with proxied_server(impl, plan, log, handler=handler, framing=None if mode == "raw" else framing,
                        batch=mode == "batch") as (server, proxy):
        with impl.connect(proxy.address, framing=framing, timeout=BOUND) as client:
            client.write(wire)
            client.flush()
            got = [client.read_frame() for _ in payloads]
    assert got == payloads


def test_delayed_segments_keep_frames_and_order(impl):
    framing = impl.Netstring()
    rng = random.Random("server-delay")
    payloads = payloads_for("Netstring", rng, 30, 200)
    plan = Faults(up=Fault(split=(1, 40), delay=(0.0, 0.001), seed=31),
                  down=Fault(split=(1, 40), delay=(0.0, 0.001), seed=32))
    log = Log()
    with proxied_server(impl, plan, log, framing=framing) as (server, proxy):
        with impl.connect(proxy.address, framing=framing, timeout=BOUND) as client:
            assert exchange(client, payloads) == payloads


# ---- one faulty connection among three -----------------------------------------------------


def _faulty_plan(fault_up: Fault = CLEAN, fault_down: Fault = CLEAN) -> Any:
    return lambda i: Faults(up=fault_up, down=fault_down) if i == FAULTY else Faults()


def _wire(framing: Any, name: str) -> tuple[list[bytes], bytes, int]:
    """Four payloads, their wire, and a cut in the third frame's payload."""
    payloads = [b"alpha", b"bravo", b"charlie-0123456789", b"delta"]
    frames = [encode(framing, p) for p in payloads]
    cut = len(frames[0]) + len(frames[1]) + len(frames[2]) - 6
    return payloads, b"".join(frames), cut


CUT_FRAMINGS = [f for f in FRAMINGS if f[0] in ("LengthPrefix(4,big)", "Varint", "Delimiter(\\r\\n)",
                                              "AsciiLength(5)", "Netstring")]


@pytest.mark.parametrize("name,make", CUT_FRAMINGS, ids=[n for n, _ in CUT_FRAMINGS])
def test_truncated_requests_close_only_that_connection(impl, name, make):
    framing = make(impl)
    payloads, wire, cut = _wire(framing, name)
    before, partial, expected = cut_error(name, framing, payloads, cut)
    log = Log()
    plan = _faulty_plan(fault_up=Fault(split=(1, 3), truncate_after=cut, seed=33))
    with proxied_server(impl, plan, log, framing=framing) as (server, proxy):
        streams = clients(impl, proxy, framing)
        try:
            good, bad, other = streams
            assert exchange(good, [b"before"]) == [b"before"]
            bad.write(wire)
            bad.flush()
            assert [bad.read_frame() for _ in range(before)] == payloads[:before]  # answered first
            with pytest.raises(EOFError):  # then the server closed it
                bad.read_frame()
            faulty = proxy.links[FAULTY].upstream_name
            proxy.wait(lambda: log.is_closed(faulty), "the faulty connection closed")
            only_faulty_closed(log, proxy)
            assert exchange(good, [b"after"]) == [b"after"]
            assert exchange(other, payloads) == payloads
        finally:
            for s in streams:
                s.close()
    exc = log.closed[faulty]
    assert isinstance(exc, IncompleteReadError), exc
    assert exc.partial == partial and exc.expected == expected
    assert log.frames[faulty] == payloads[:before]


def test_truncated_replies_close_only_that_connection(impl):
    framing = impl.LengthPrefix(4)
    payloads, wire, cut = _wire(framing, "LengthPrefix(4,big)")
    before, partial, expected = cut_error("LengthPrefix(4,big)", framing, payloads, cut)
    log = Log()
    plan = _faulty_plan(fault_down=Fault(split=(1, 3), truncate_after=cut, seed=34))
    with proxied_server(impl, plan, log, framing=framing) as (server, proxy):
        streams = clients(impl, proxy, framing)
        try:
            good, bad, other = streams
            bad.write_frames(payloads)
            bad.flush()
            assert [bad.read_frame() for _ in range(before)] == payloads[:before]
            with pytest.raises(IncompleteReadError) as info:
                bad.read_frame()
            assert info.value.partial == partial and info.value.expected == expected
            assert exchange(good, payloads) == payloads
            bad.close()  # the client gives up: the server sees an orderly close
            faulty = proxy.links[FAULTY].upstream_name
            proxy.wait(lambda: log.is_closed(faulty), "the faulty connection closed")
            only_faulty_closed(log, proxy)
            assert exchange(other, payloads) == payloads
        finally:
            for s in streams:
                s.close()
    assert log.closed[faulty] is None
    assert log.frames[faulty] == payloads


@pytest.mark.parametrize("direction", ["requests", "replies"])
def test_a_reset_closes_only_that_connection(impl, direction):
    # A reset of the requests after a cut in the third one, or of the replies at the same
    # point: the proxy resets both ends, so the server sees ECONNRESET either way. (The
    # requests' case sends no reply: a reply written into the reset could end the connection
    # before the server has read every byte that came before the reset, which the kernel
    # holds for it, and make what it saw depend on timing.)
    framing = impl.LengthPrefix(4)
    payloads, wire, cut = _wire(framing, "LengthPrefix(4,big)")
    before, partial, _ = cut_error("LengthPrefix(4,big)", framing, payloads, cut)
    fault = Fault(split=(1, 3), reset_after=cut, seed=35)
    plan = _faulty_plan(fault_up=fault) if direction == "requests" else _faulty_plan(fault_down=fault)
    log = Log()
    with proxied_server(impl, plan, log, framing=framing) as (server, proxy):
        streams = clients(impl, proxy, framing)
        try:
            good, bad, other = streams
            faulty = proxy.links[FAULTY].upstream_name
            if direction == "requests":
                log.silent.add(faulty)
            bad.write(wire)
            bad.flush()
            proxy.wait(lambda: log.is_closed(faulty), "the faulty connection closed")
            only_faulty_closed(log, proxy)
            replies = []
            with pytest.raises(ConnectionResetError):
                for _ in payloads:
                    replies.append(bad.read_frame())
            kept = bad.peek() if bad.buffered else b""  # what the client still holds
            assert exchange(good, payloads) == payloads
            assert exchange(other, payloads) == payloads
        finally:
            for s in streams:
                s.close()
    exc = log.closed[faulty]
    assert isinstance(exc, ConnectionResetError) and exc.errno == errno.ECONNRESET, exc
    if direction == "requests":
        assert log.frames[faulty] == payloads[:before]  # exactly the frames before the cut
        assert replies == []
    else:
        assert log.frames[faulty] == payloads  # every request arrived; the replies were cut
        assert replies == payloads[:before]
        assert kept == partial  # the cut reply's bytes are still in the client's buffer


@pytest.mark.parametrize("timer", ["frame_timeout", "idle_timeout"])
def test_a_stalled_client_is_closed_by_its_timeout_only(impl, timer):
    # The client vanishes without FIN: in the middle of a frame (frame_timeout closes it), or
    # between frames (idle_timeout does). The other connections are served meanwhile.
    framing = impl.LengthPrefix(4)
    payloads, wire, cut = _wire(framing, "LengthPrefix(4,big)")
    if timer == "idle_timeout":
        cut = len(encode(framing, payloads[0])) + len(encode(framing, payloads[1]))
    before, partial, _ = cut_error("LengthPrefix(4,big)", framing, payloads, cut)
    log = Log()
    plan = _faulty_plan(fault_up=Fault(split=(1, 3), stall_after=cut, seed=36))
    options = {"frame_timeout": 0.2} if timer == "frame_timeout" else {"idle_timeout": 0.5}
    with proxied_server(impl, plan, log, framing=framing, **options) as (server, proxy):
        streams = clients(impl, proxy, framing)
        try:
            good, bad, other = streams
            # (With idle_timeout, the clean connections talk every 10 ms from here on; idle
            # longer, they would be closed too, rightly: the wait below keeps them busy.)
            assert exchange(good, [b"ping"]) == [b"ping"] and exchange(other, [b"pong"]) == [b"pong"]
            bad.write(wire)
            bad.flush()
            assert [bad.read_frame() for _ in range(before)] == payloads[:before]
            faulty = proxy.links[FAULTY].upstream_name
            for _ in range(1000):  # bounded; the clean connections keep talking meanwhile
                if log.is_closed(faulty):
                    break
                assert exchange(good, [b"ping"]) == [b"ping"]
                assert exchange(other, [b"pong"]) == [b"pong"]
                time.sleep(0.01)
            proxy.wait(lambda: log.is_closed(faulty), "the stalled connection closed")
            only_faulty_closed(log, proxy)
            with pytest.raises(EOFError):
                bad.read_frame()
            assert exchange(other, payloads) == payloads
        finally:
            for s in streams:
                s.close()
    exc = log.closed[faulty]
    expected_type = impl.FrameTimeout if timer == "frame_timeout" else impl.IdleTimeout
    assert isinstance(exc, expected_type), exc
    assert log.frames[faulty] == payloads[:before]
    assert proxy.links[FAULTY].up.forwarded == cut
