"""A fault-injecting TCP proxy for tests: a network that splits, delays, stalls, truncates and
resets, between a client and a server on 127.0.0.1.

    with FaultProxy(server_address, Faults(down=Fault(split=1))) as proxy:
        client = connect(proxy.address)       # every byte server -> client in its own send()

Each accepted connection is one `Link` with two `Flow`s: `up` (client -> server) and `down`
(server -> client). A `Fault` says what the proxy does to one flow:

- `split`: None forwards each recv() as it came; 1 sends every byte with its own send();
  (lo, hi) cuts the stream into random segments of lo..hi bytes (a seeded RNG: the seed, the
  link's index and the flow's name give the same cuts on every run). Both sockets have
  TCP_NODELAY, so each send() leaves as its own TCP segment.
- `delay`: seconds (or a (lo, hi) range, seeded) waited after each segment before the next.
- `stall_after=N`: forward N bytes, then nothing more and no FIN (a peer that vanished
  without closing); `done` becomes "stalled" once the destination's kernel has taken the N
  bytes (they are readable there). The proxy stops reading the source too (the rest of the
  read that crossed N is `held`), so a sender fills the buffers on its way and then blocks,
  as it would facing a vanished host. `release()` forwards what is held, lifts the stall and the
  delay, and reads on (an EOF that came meanwhile follows).
- `truncate_after=N`: forward N bytes, then FIN to the destination (a sender that closed in
  the middle); what the source still sends is read and dropped (`dropped`), so no unread byte
  turns the proxy's close into a reset.
- `reset_after=N`: forward N bytes, wait until the destination's kernel has taken them (so
  they are readable before the error), then reset the connection: SO_LINGER 0 and close on
  both sockets, so the destination reads its N bytes then ECONNRESET, and the source sees a
  reset too (the proxy vanished abruptly). Bytes queued the other way are dropped (counted).

Without a fault a flow forwards everything and passes an EOF on as a FIN (half-closes work);
a reset by either peer is passed on as a reset, after the bytes that peer sent before it.

Accounting, per flow: `received` (read from the source) == `forwarded` (taken by the
destination's send()) + `queued` + `held` + `dropped`; `sends` counts send() calls. Tests
compare what an application got with what its peer sent to assert 0 lost, 0 duplicated.

One daemon thread runs a selectors loop over every socket (all non-blocking; a flow never
blocks another); `close()` (or leaving the `with`) stops it, joins it within 10 s, closes
every socket, and re-raises anything the loop raised. Every wait in the loop is at most 50 ms.
"""

from __future__ import annotations

import collections
import random
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Union

__all__ = ["Fault", "Faults", "FaultProxy", "Flow", "Link", "CLEAN"]

#: The longest the loop waits for an event (also how quickly it notices close()).
TICK = 0.05
#: A flow stops reading its source while this many bytes wait to be sent or are held.
QUEUE_LIMIT = 1 << 20
#: Sends a flow makes per loop turn at most when it has no delay (other flows get a turn).
BURST = 64
#: How long a stall or a reset waits for its last bytes to leave the proxy's send queue.
RESET_WAIT = 5.0
_LINGER0 = struct.pack("ii", 1, 0)

Range = Union[float, tuple[float, float]]


@dataclass(frozen=True)
class Fault:
    """What the proxy does to one direction of one connection (see the module docstring)."""

    split: Union[int, tuple[int, int], None] = None
    delay: Range = 0.0
    stall_after: Optional[int] = None
    truncate_after: Optional[int] = None
    reset_after: Optional[int] = None
    seed: int = 0

    def __post_init__(self) -> None:
        ends = [x for x in (self.stall_after, self.truncate_after, self.reset_after) if x is not None]
        if len(ends) > 1:
            raise ValueError("one of stall_after, truncate_after, reset_after at most")
        if any(x < 0 for x in ends):
            raise ValueError("a byte count must be >= 0")
        split = self.split
        if isinstance(split, int) and split < 1:
            raise ValueError("split must be >= 1")
        if isinstance(split, tuple) and not 1 <= split[0] <= split[1]:
            raise ValueError("split=(lo, hi) needs 1 <= lo <= hi")

    @property
    def limit(self) -> Optional[int]:
        """Bytes forwarded before the fault's end (None: no end)."""
        for x in (self.stall_after, self.truncate_after, self.reset_after):
            if x is not None:
                return x
        return None

    @property
    def kind(self) -> str:
        """A short name: clean, split, delay, stall, truncate or reset (the end wins)."""
        if self.stall_after is not None:
            return "stall"
        if self.truncate_after is not None:
            return "truncate"
        if self.reset_after is not None:
            return "reset"
        if self.delay:
            return "delay"
        return "clean" if self.split is None else "split"


CLEAN = Fault()


@dataclass(frozen=True)
class Faults:
    """The faults of one connection: `up` (client -> server) and `down` (server -> client)."""

    up: Fault = CLEAN
    down: Fault = CLEAN


Plan = Union[Faults, Callable[[int], Faults]]


def _unsent(sock: socket.socket) -> int:
    """Bytes in `sock`'s send queue not yet acknowledged by the peer's kernel (Linux
    SIOCOUTQ); 0 where the platform cannot say."""
    try:
        import fcntl
        import termios

        out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        return int(struct.unpack("i", out)[0])
    except (ImportError, AttributeError, OSError):
        return 0


class Flow:
    """One direction of a Link: its fault, its queue of segments and its counters (read
    them from any thread; they change only on the proxy's thread)."""

    def __init__(self, link: Link, name: str, src: socket.socket, dst: socket.socket, fault: Fault) -> None:
        self.link = link
        self.name = name
        self.src = src
        self.dst = dst
        self.fault = fault
        self._rng = random.Random(f"{fault.seed}:{link.index}:{name}")
        self._budget = fault.limit  # bytes still to forward before the fault's end
        self._split = fault.split
        self._delay = fault.delay
        self._queue: collections.deque[memoryview] = collections.deque()
        self._queued = 0
        self._held = bytearray()
        self._stalled = False
        self._blocked = False  # the last send() would have blocked: wait for WRITE
        self._next_at = 0.0  # monotonic time before which no segment leaves (delay)
        self._ending: Optional[str] = None  # once the queue is empty: "fin", "truncate", "reset", "stall"
        self._drain_deadline: Optional[float] = None  # a stall or reset waits for the send queue
        self.src_eof = False  # EOF (or a reset) read from the source
        self.done: Optional[str] = None  # how the flow ended: fin, truncated, reset, stalled, dropped
        self.received = 0
        self.forwarded = 0
        self.dropped = 0
        self.sends = 0
        if self._budget == 0:  # the fault ends the flow before its first byte
            self._ending = self._end_kind()

    # -- counters ---------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Bytes read and cut into segments, not yet sent."""
        return self._queued

    @property
    def held(self) -> int:
        """Bytes read while stalled, kept for release()."""
        return len(self._held)

    def balanced(self) -> bool:
        """received == forwarded + queued + held + dropped: the proxy itself lost nothing."""
        return self.received == self.forwarded + self.queued + self.held + self.dropped

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters and the state."""
        return {"received": self.received, "forwarded": self.forwarded, "queued": self.queued,
                "held": self.held, "dropped": self.dropped, "sends": self.sends, "done": self.done}

    def __repr__(self) -> str:
        return f"<Flow {self.link.index}.{self.name} {self.fault.kind} {self.stats()}>"

    # -- the loop's side ----------------------------------------------------------------

    def wants_read(self) -> bool:
        if self.src_eof or self.link.closed:
            return False
        if self._stalled:
            return False
        if self.done is not None:  # truncated: read and drop until EOF
            return True
        return self._queued + len(self._held) < QUEUE_LIMIT

    def wants_write(self) -> bool:
        return self._blocked and bool(self._queue) and not self.link.closed

    def ready_at(self) -> Optional[float]:
        """When this flow next has something to do without an event (None: only on events)."""
        if self.done is not None or self.link.closed:
            return None
        if self._drain_deadline is not None:
            return time.monotonic() + 0.001  # polling the send queue until it drains
        if self._queue and not self._blocked:
            return self._next_at
        if not self._queue and self._ending is not None:
            return 0.0
        return None

    def on_data(self, data: bytes) -> None:
        """Bytes read from the source: forwarded, held or dropped as the fault says."""
        self.received += len(data)
        if self._stalled:
            self._held += data
            return
        if self.done is not None:
            self.dropped += len(data)
            return
        take = data
        if self._budget is not None:
            take = data[:self._budget]
            self._budget -= len(take)
            rest = data[len(take):]
            if self._budget == 0 and self._ending is None:
                self._ending = self._end_kind()
            if rest:
                if self._ending == "stall":
                    self._held += rest
                else:
                    self.dropped += len(rest)
        self._cut(take)

    def _end_kind(self) -> str:
        f = self.fault
        if f.stall_after is not None:
            return "stall"
        return "truncate" if f.truncate_after is not None else "reset"

    def _cut(self, data: bytes) -> None:
        if not data:
            return
        view = memoryview(data)
        split = self._split
        self._queued += len(view)
        if split is None:
            self._queue.append(view)
            return
        i = 0
        while i < len(view):
            size = split if isinstance(split, int) else self._rng.randint(split[0], split[1])
            self._queue.append(view[i:i + size])
            i += size

    def on_eof(self) -> None:
        """EOF from the source: a FIN to the destination after the queue (unless a fault
        ended the flow first, or the stall keeps it)."""
        self.src_eof = True
        if self._ending is None and self.done is None:
            self._ending = "fin"

    def on_peer_reset(self) -> None:
        """The source's peer reset: pass the reset on once the queue has left."""
        self.src_eof = True
        if self.done is None and self._ending != "stall":
            self._ending = "reset"
            self._budget = 0

    def _pause(self) -> float:
        d = self._delay
        if isinstance(d, tuple):
            return self._rng.uniform(d[0], d[1])
        return float(d)

    def pump(self, now: float) -> None:
        """Send what may go now (non-blocking), then the fault's end once the queue is empty."""
        if self.done is not None or self.link.closed:
            return
        sent = 0
        while self._queue and not self._blocked and now >= self._next_at and sent < BURST:
            segment = self._queue[0]
            try:
                n = self.dst.send(segment)
            except (BlockingIOError, InterruptedError):
                self._blocked = True
                return
            except OSError:  # the destination's peer is gone (EPIPE, ECONNRESET)
                self.link.peer_reset(self.dst)
                return
            self.sends += 1
            self.forwarded += n
            self._queued -= n
            sent += 1
            if n < len(segment):
                self._queue[0] = segment[n:]
                continue
            self._queue.popleft()
            pause = self._pause()
            if pause > 0:
                self._next_at = time.monotonic() + pause
                break
        if not self._queue and self._ending is not None:
            self._end(now)

    def _drained(self, now: float) -> bool:
        """True once the destination's kernel has taken every byte sent (or RESET_WAIT passed):
        what came before a stall or a reset is then readable at the destination."""
        if self._drain_deadline is None:
            self._drain_deadline = now + RESET_WAIT
        if _unsent(self.dst) and now < self._drain_deadline:
            return False
        self._drain_deadline = None
        return True

    def _end(self, now: float) -> None:
        ending = self._ending
        if ending == "stall":
            if self._drained(now):
                self._stalled = True
                self.done = "stalled"
        elif ending in ("fin", "truncate"):
            try:
                self.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.done = "fin" if ending == "fin" else "truncated"
            self.link.maybe_close()
        elif ending == "reset" and self._drained(now):
            self.done = "reset"
            self.link.reset()

    def on_writable(self) -> None:
        self._blocked = False

    def release(self) -> None:
        """Lift a stall and the delay: forward what was held (then an EOF that came)."""
        self._delay = 0.0
        self._next_at = 0.0
        self._budget = None
        self._drain_deadline = None
        if self._stalled or self._ending == "stall":
            self._stalled = False
            self.done = None
            self._ending = "fin" if self.src_eof else None
            held, self._held = bytes(self._held), bytearray()
            self._cut(held)

    def drop_queue(self) -> None:
        n = self._queued + len(self._held)
        self._queued = 0
        self._queue.clear()
        self._held = bytearray()
        self.dropped += n


class Link:
    """One proxied connection: the client's socket, the server's, and the two flows."""

    def __init__(self, index: int, client: socket.socket, server: socket.socket, faults: Faults,
                 forget: Callable[[socket.socket], None]) -> None:
        self.index = index
        self._forget = forget  # the proxy's: unregister a socket before it is closed
        self.client = client
        self.server = server
        self.faults = faults
        #: The proxy's address toward the server (what the server sees as the peer).
        self.upstream_name = server.getsockname()
        self.closed = False
        self.reset_sent = False
        self.up = Flow(self, "up", client, server, faults.up)
        self.down = Flow(self, "down", server, client, faults.down)

    def flows(self) -> tuple[Flow, Flow]:
        return self.up, self.down

    def flow_from(self, sock: socket.socket) -> Flow:
        return self.up if sock is self.client else self.down

    def flow_into(self, sock: socket.socket) -> Flow:
        return self.down if sock is self.client else self.up

    def peer_reset(self, sock: socket.socket) -> None:
        """`sock`'s peer reset: what goes into it is dropped, what came from it follows, then
        the reset is passed on."""
        into = self.flow_into(sock)
        into.drop_queue()
        if into.done is None:
            into.done = "dropped"
        out = self.flow_from(sock)
        if out.done is None:
            out.on_peer_reset()
        else:  # nothing left to pass on first
            self.reset()

    def reset(self) -> None:
        """RST to both peers (SO_LINGER 0, close); whatever is still queued is dropped."""
        if self.closed:
            return
        for flow in self.flows():
            flow.drop_queue()
            if flow.done is None:
                flow.done = "dropped"
        self.reset_sent = True
        for sock in (self.client, self.server):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
            except OSError:
                pass
        self.close()

    def maybe_close(self) -> None:
        """Close both sockets once each flow sent its FIN and read its source's EOF."""
        if all(f.done in ("fin", "truncated") and f.src_eof for f in self.flows()):
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for sock in (self.client, self.server):
                self._forget(sock)
                sock.close()

    def __repr__(self) -> str:
        return f"<Link {self.index} up={self.up.stats()} down={self.down.stats()}>"


class FaultProxy:
    """FaultProxy(target, plan=Faults()): a proxy on 127.0.0.1 to the TCP `target` address.

    `plan` is the Faults of every connection, or a function of the connection's index (0 for
    the first accepted) returning its Faults. `buffer_size` (bytes) sets SO_RCVBUF and
    SO_SNDBUF on the proxy's sockets, so that a stall fills them quickly. `address` is where
    clients connect; `links` lists the connections in accept order. A context manager:
    leaving it closes everything."""

    def __init__(self, target: Any, plan: Plan = Faults(), *, host: str = "127.0.0.1",
                 buffer_size: Optional[int] = None) -> None:
        self.target = tuple(target[:2])
        self._plan = plan
        self._buffer_size = buffer_size
        self.links: list[Link] = []
        self.refused = 0  # connections whose upstream connect failed (closed at once)
        self._error: Optional[BaseException] = None
        self._stopping = False
        self._calls: collections.deque[Callable[[], None]] = collections.deque()
        self._sel = selectors.DefaultSelector()
        self._masks: dict[socket.socket, int] = {}
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            self._sized(self._listener)  # accepted sockets inherit it
            self._listener.bind((host, 0))
            self._listener.listen(128)
            self._listener.setblocking(False)
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._sel.register(self._listener, selectors.EVENT_READ)
            self._sel.register(self._wake_r, selectors.EVENT_READ)
        except BaseException:
            self._close_sockets()
            raise
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()

    # -- the test's side ----------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop, join its thread, close every socket; re-raise what the loop raised."""
        self._stopping = True
        self._wake()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError("the fault proxy's thread did not stop in time")
        self._close_sockets()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def call(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the proxy's thread, at its next turn."""
        self._calls.append(fn)
        self._wake()

    def release(self, index: int, direction: str) -> None:
        """Lift the stall and the delay of flow `direction` ("up"/"down") of link `index`."""
        flow = getattr(self.link(index), direction)
        self.call(flow.release)

    def link(self, index: int, timeout: float = 10.0) -> Link:
        """Link `index`, waiting (bounded) for the connection to be accepted."""
        self.wait(lambda: len(self.links) > index, f"connection {index} accepted", timeout)
        return self.links[index]

    def wait(self, predicate: Callable[[], Any], what: str = "a condition", timeout: float = 10.0) -> Any:
        """Poll `predicate` every millisecond until it is true (AssertionError after
        `timeout` s, or as soon as the loop has failed)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self._error is not None:
                raise AssertionError(f"the fault proxy failed while waiting for {what}") from self._error
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; links={self.links!r}")
            time.sleep(0.001)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a wake-up is pending anyway) or closed
            pass

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._turn()
        except BaseException as exc:  # reported by close() and wait()
            self._error = exc
        finally:
            for link in self.links:
                link.close()

    def _turn(self) -> None:
        while self._calls:
            self._calls.popleft()()
        now = time.monotonic()
        timeout = TICK
        live = [link for link in self.links if not link.closed]
        for link in live:
            for flow in link.flows():
                flow.pump(now)
        for link in live:
            for flow in link.flows():
                at = flow.ready_at()
                if at is not None:
                    timeout = min(timeout, max(0.0, at - time.monotonic()))
        self._register(live)
        for key, events in self._sel.select(timeout):
            sock = key.fileobj
            if sock is self._listener:
                self._accept()
            elif sock is self._wake_r:
                try:
                    self._wake_r.recv(4096)
                except OSError:
                    pass
            else:
                link = key.data
                if link.closed:
                    continue
                if events & selectors.EVENT_WRITE:
                    link.flow_into(sock).on_writable()
                if events & selectors.EVENT_READ:
                    self._read(link, sock)

    def _register(self, live: list[Link]) -> None:
        """Bring the selector in line with what each socket waits for; forget closed ones."""
        wanted: dict[socket.socket, tuple[int, Link]] = {}
        for link in live:
            if link.closed:
                continue
            for sock in (link.client, link.server):
                mask = 0
                if link.flow_from(sock).wants_read():
                    mask |= selectors.EVENT_READ
                if link.flow_into(sock).wants_write():
                    mask |= selectors.EVENT_WRITE
                wanted[sock] = (mask, link)
        for sock in list(self._masks):
            if sock not in wanted or wanted[sock][0] == 0:
                self._forget(sock)
        for sock, (mask, link) in wanted.items():
            if not mask:
                continue
            if sock not in self._masks:
                self._sel.register(sock, mask, link)
            elif self._masks[sock] != mask:
                self._sel.modify(sock, mask, link)
            self._masks[sock] = mask

    def _read(self, link: Link, sock: socket.socket) -> None:
        flow = link.flow_from(sock)
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # ECONNRESET: the peer reset
            link.peer_reset(sock)
            return
        if data:
            flow.on_data(data)
        else:
            flow.on_eof()
            link.maybe_close()

    def _accept(self) -> None:
        for _ in range(64):  # bounded: the rest at the next turn
            try:
                client, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            try:
                server = socket.socket(socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET)
                try:
                    self._sized(server)
                    server.settimeout(5)
                    server.connect(self.target)
                except BaseException:
                    server.close()
                    raise
            except OSError:
                client.close()
                self.refused += 1
                continue
            for s in (client, server):
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            index = len(self.links)
            plan = self._plan
            faults = plan if isinstance(plan, Faults) else plan(index)
            self.links.append(Link(index, client, server, faults, self._forget))

    def _sized(self, sock: socket.socket) -> None:
        if self._buffer_size is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._buffer_size)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._buffer_size)

    def _forget(self, sock: socket.socket) -> None:
        if self._masks.pop(sock, None) is not None:
            self._sel.unregister(sock)

    def _close_sockets(self) -> None:
        for link in self.links:
            link.close()
        self._masks.clear()
        try:
            self._sel.close()
        except (OSError, RuntimeError):
            pass
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()
