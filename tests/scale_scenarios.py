"""The client side of the scale and hostile-client scenarios (see scaleutil, which runs them):
each driver function runs in a child process of its own, gets the server's port and pid, and
returns a JSON-able dict of counts and figures; `python scale_scenarios.py ROLE PARAMS` is the
entry point of every child (the server, a driver, the slowloris prober). Every loop is
bounded in count and in time.
"""

from __future__ import annotations

import collections
import json
import os
import random
import select
import signal
import socket
import sys
import time
from array import array
from typing import Any, Optional

from scaleutil import (
    HEADER,
    KINDS,
    TICK,
    Caller,
    Control,
    fds,
    frame,
    open_many,
    percentile,
    reset,
    rss,
    serve,
    settled_rss,
)

from fastsock._bench import procs

# ---- scenario: 10,000 connections, one request a second each ------------------------------


def tenk(port: int, pid: int, conns: int = 10_000, seconds: int = 10, **_: Any) -> dict[str, Any]:
    """`conns` connections each send a framed request once a second (their phases spread over
    the second) for `seconds` s, waiting for each reply before the next: every reply checked,
    latencies from send to whole reply, the server's RSS before, at `conns` and during."""
    ctl = Control(port)
    warm = open_many(port, 64, ctl)  # what every later connection reuses (pools, dict sizes)
    for s in warm:
        s.close()
    ctl.wait("the warm-up closed", lambda st: st["connections"] == 1)
    base_rss, base_fds = settled_rss(pid), fds(pid)
    t_open = time.monotonic()
    socks = open_many(port, conns, ctl)
    connect_s = time.monotonic() - t_open
    idle_rss, peak_fds = settled_rss(pid), fds(pid)
    ep = select.epoll()
    index = {}
    for i, s in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLIN)
        index[s.fileno()] = i
    sent_at = [0.0] * conns
    done = [0] * conns  # requests answered, per connection
    waiting = bytearray(conns)
    deferred = bytearray(conns)  # a request fell due while the last one was unanswered
    partial: dict[int, bytes] = {}
    latencies = array("d")
    counts: collections.Counter[str] = collections.Counter()
    inflight = 0
    peak_rss = idle_rss

    def send(i: int) -> None:
        nonlocal inflight
        data = frame(b"%08d%08d" % (i, done[i]))
        sent_at[i] = time.monotonic()
        try:
            n = socks[i].send(data)
        except OSError:
            n = -1
        if n != len(data):
            counts["send_failed"] += 1
            return
        waiting[i] = 1
        inflight += 1
        counts["sent"] += 1

    t0 = time.monotonic() + 0.05
    due: collections.deque[tuple[float, int, int]] = collections.deque(
        (t0 + i / conns, i, 1) for i in range(conns))
    hard_stop = t0 + seconds + 30
    next_sample = t0 + 1.0
    while (due or inflight) and time.monotonic() < hard_stop:
        now = time.monotonic()
        while due and due[0][0] <= now:
            when, i, k = due.popleft()
            if waiting[i]:
                deferred[i] += 1
                counts["late"] += 1
            else:
                send(i)
            if k < seconds:
                due.append((when + 1.0, i, k + 1))
        if now >= next_sample:
            peak_rss = max(peak_rss, rss(pid))
            next_sample = now + 1.0
        wait = min(0.05, max(0.0, due[0][0] - time.monotonic())) if due else 0.05
        for fd, _ in ep.poll(wait):
            i = index[fd]
            try:
                data = socks[i].recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                counts["eof"] += 1
                ep.unregister(fd)
                inflight -= waiting[i]
                waiting[i] = 0
                continue
            data = partial.pop(i, b"") + data
            if len(data) < 20:
                partial[i] = data
                continue
            if not waiting[i] or data != frame(b"%08d%08d" % (i, done[i])):
                counts["wrong"] += 1
            else:
                latencies.append(time.monotonic() - sent_at[i])
                counts["answered"] += 1
            inflight -= waiting[i]
            waiting[i] = 0
            done[i] += 1
            if deferred[i]:
                deferred[i] -= 1
                send(i)
    elapsed = time.monotonic() - t0
    end_rss = rss(pid)
    st = ctl.stats()
    ep.close()
    for s in socks:
        s.close()
    ctl.wait("the connections closed", lambda st: st["connections"] == 1)
    closed_rss, closed_fds = settled_rss(pid), fds(pid)
    ctl.close()
    return {
        "conns": conns, "seconds": seconds, "expected": conns * seconds,
        "sent": counts["sent"], "answered": counts["answered"], "wrong": counts["wrong"],
        "eof": counts["eof"], "send_failed": counts["send_failed"], "late": counts["late"],
        "unanswered": sum(waiting) + sum(deferred), "elapsed_s": elapsed, "connect_s": connect_s,
        "p50_ms": percentile(latencies, 50) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3,
        "max_ms": max(latencies, default=float("nan")) * 1e3,
        "server_connections": st["connections"], "server_frames_in": st["frames_in"],
        "base_rss": base_rss, "idle_rss": idle_rss, "peak_rss": max(peak_rss, end_rss), "end_rss": end_rss,
        "closed_rss": closed_rss, "base_fds": base_fds, "peak_fds": peak_fds, "closed_fds": closed_fds,
    }


# ---- scenario: slowloris -----------------------------------------------------------------


def probe(port: int, interval: float, seconds: float) -> dict[str, Any]:
    """The prober child: connects, prints READY, then sends one 64-byte request every
    `interval` s until SIGTERM or `seconds` s (times are time.monotonic(): CLOCK_MONOTONIC,
    the same clock in every process)."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    caller = Caller(port)
    print("READY", flush=True)
    t = first = time.monotonic()
    end = t + seconds
    last = None
    while not stop and t < end:
        pause = t - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        payload = b"%064d" % caller.sent
        if not caller.call(payload, payload):
            break
        last = time.monotonic()
        t += interval
    caller.close()
    return dict(caller.result(), first=first, last=last)


def _prober(port: int, interval: float, seconds: float) -> procs.Child:
    """A prober child, once it is connected and about to send its first request."""
    argv = [sys.executable, os.path.abspath(__file__), "probe",
            json.dumps({"port": port, "interval": interval, "seconds": seconds})]
    child = procs.Child("prober", argv, env=dict(os.environ))
    if child.expect(("READY",), time.monotonic() + 30) is None:
        child.kill()
        raise RuntimeError(f"the prober did not start: {child.stderr_tail()}")
    return child


def _prober_result(child: procs.Child, timeout: float) -> dict[str, Any]:
    try:
        line = child.expect(("RESULT",), time.monotonic() + timeout)
        if line is None:
            raise RuntimeError(f"no result from the prober: {child.stderr_tail()}")
        return json.loads(line.split(" ", 1)[1])  # type: ignore[no-any-return]
    finally:
        child.kill()


def _trickle(socks: list[socket.socket], data: bytes, pace: float) -> dict[str, Any]:
    """Each socket sends `data` one byte every `pace` s (phases spread over `pace`) until the
    server closes it (EOF, reset or EPIPE seen) or the whole of it is sent; bounded by the time
    every frame would take plus 10 s. When each sent its first byte and saw its close."""
    conns = len(socks)
    ep = select.epoll()
    index = {s.fileno(): i for i, s in enumerate(socks)}
    for fd in index:
        ep.register(fd, select.EPOLLIN)
    first = [0.0] * conns
    closed = [0.0] * conns
    offset = [0] * conns
    echoed = completed = 0
    left = conns

    def close(i: int) -> None:
        nonlocal left
        closed[i] = time.monotonic()
        left -= 1
        ep.unregister(socks[i].fileno())

    start = time.monotonic() + 0.05
    due = collections.deque((start + i * pace / conns, i) for i in range(conns))
    hard_stop = start + len(data) * pace + 10
    try:
        while left and time.monotonic() < hard_stop:
            now = time.monotonic()
            while due and due[0][0] <= now:
                when, i = due.popleft()
                if closed[i]:
                    continue
                if not first[i]:
                    first[i] = time.monotonic()
                try:
                    socks[i].send(data[offset[i]:offset[i] + 1])
                except OSError:  # reset or EPIPE: the server closed it
                    close(i)
                    continue
                offset[i] += 1
                if offset[i] < len(data):
                    due.append((when + pace, i))
                else:
                    completed += 1
            wait = min(0.05, max(0.0, due[0][0] - time.monotonic())) if due else 0.05
            for fd, _ in ep.poll(wait):
                i = index[fd]
                try:
                    got = socks[i].recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    got = b""
                if got:
                    echoed += len(got)
                else:
                    close(i)
    finally:
        ep.close()
    return {"first": first, "closed": closed, "echoed": echoed, "completed": completed}


def slowloris(port: int, pid: int, conns: int = 1000, frame_timeout: float = 2.0, pace: float = 0.1,
              baseline: bool = True, probe_interval: float = 0.005, **_: Any) -> dict[str, Any]:
    """`conns` connections each trickle one byte of a 104-byte frame every `pace` s; each
    should be closed `frame_timeout` after its first byte. A prober in its own process is
    served meanwhile, from before the first byte until after the last close (and, with
    `baseline`, before the attack for frame_timeout + 1 s: its latency without the attack)."""
    ctl = Control(port)
    base: Optional[dict[str, Any]] = None
    if baseline:
        base = _prober_result(_prober(port, probe_interval, frame_timeout + 1.0), frame_timeout + 31)
    socks = open_many(port, conns, ctl)
    prober = None
    try:
        prober = _prober(port, probe_interval, frame_timeout + 30.0)  # until SIGTERM, after the attack
        attack = _trickle(socks, frame(b"s" * 100), pace)  # 104 bytes: 10.4 s to complete
        os.kill(prober.pid, signal.SIGTERM)
        during = _prober_result(prober, 30)
    finally:
        if prober is not None:
            prober.kill()
        for s in socks:
            s.close()
    st = ctl.wait("the attack's connections closed", lambda st: st["connections"] == 1)
    ctl.close()
    first, closed = attack["first"], attack["closed"]
    after = [c - f for f, c in zip(first, closed) if c and f]
    return {
        "conns": conns, "frame_timeout": frame_timeout, "pace": pace, "tick": TICK,
        "closed": len(after), "completed": attack["completed"], "echoed": attack["echoed"],
        "close_min_s": min(after, default=float("nan")), "close_median_s": percentile(after, 50),
        "close_max_s": max(after, default=float("nan")), "server_timeouts": st["timeouts"],
        "attack_first": min((f for f in first if f), default=None), "attack_last_close": max(closed, default=None),
        "baseline": base, "during": during,
    }


# ---- scenario: clients that pipeline and never read -------------------------------------


def nonreading(port: int, pid: int, conns: int = 100, reply: int = 65536, bound: int = 0, hold: float = 2.0,
               per_conn: int = 20_000, **_: Any) -> dict[str, Any]:
    """`conns` connections each pipeline up to `per_conn` requests for `reply` bytes and never
    read. While the server fills their queues and the kernel's buffers ("filling": until all
    are paused and no byte has left for 100 ms), then for `hold` s ("held"): the server's RSS
    sampled and a well-behaved client's requests (echo and a `reply`-byte reply, alternately);
    then, still held, the server's RSS in use (after gc and malloc_trim), against the same before."""
    ctl = Control(port)
    caller = Caller(port)
    request = b"!fill %d" % reply
    for _ in range(4):  # the sizes every later request allocates
        caller.call(request, b"f" * reply)
        caller.call(b"warm", b"warm")
    base_rss, base_fds = settled_rss(pid), fds(pid)
    base_trimmed = ctl.stats(do_gc=True)["rss_trimmed"]
    caller.restart()
    socks = open_many(port, conns, ctl, rcvbuf=16384)  # small: the kernel holds little of the replies
    chunk = frame(request) * 1000
    pushed = [0] * conns
    peak = {"rss": 0, "pending": 0}
    k = 0

    def push() -> None:
        for i, s in enumerate(socks):
            while pushed[i] < per_conn:
                try:
                    n = s.send(chunk)
                except BlockingIOError:
                    break
                pushed[i] += n // len(frame(request))
                if n < len(chunk):
                    break  # (a partial request waits in the kernel: the counts are approximate)

    def step() -> dict[str, Any]:
        nonlocal k
        push()
        peak["rss"] = max(peak["rss"], rss(pid))
        if k % 2:
            caller.call(request, b"f" * reply)
        else:
            caller.call(b"hello %d" % k, b"hello %d" % k)
        k += 1
        st = ctl.stats()
        peak["pending"] = max(peak["pending"], st["pending_max"])
        return st

    try:
        t0 = time.monotonic()
        deadline = t0 + 30
        last_out = -1
        while time.monotonic() < deadline:
            st = step()
            # what the server sent the non-readers: all it sent, less what this driver received
            out = st["bytes_out"] - caller.received - st["control_received"]
            if st["paused"] >= conns and out == last_out:
                break
            last_out = out
            time.sleep(0.05)
        filling_s = time.monotonic() - t0
        filling = caller.restart()
        paused_at_start = st["paused"]
        end = time.monotonic() + hold
        while time.monotonic() < end:
            step()
            time.sleep(0.05)
        held = caller.restart()
        peak["rss"] = max(peak["rss"], rss(pid))
        st = ctl.stats(do_gc=True)  # still held: the RSS in use, without the allocator's free memory
    finally:
        for s in socks:
            s.close()
    ctl.wait("the non-readers closed", lambda st: st["connections"] == 2)
    closed_rss, closed_fds = settled_rss(pid), fds(pid)
    still = caller.call(b"after", b"after")
    caller.close()
    ctl.close()
    return {
        "conns": conns, "reply": reply, "bound_per_conn": bound, "pushed_min": min(pushed),
        "paused_at_start": paused_at_start, "paused_at_end": st["paused"], "server_connections": st["connections"],
        "pending_max": max(peak["pending"], st["pending_max"]), "sent_per_conn": last_out // conns,
        "filling_s": filling_s, "filling": filling, "held": held, "served_after": still,
        "base_rss": base_rss, "peak_rss": peak["rss"], "limit_rss": base_rss + conns * bound,
        "base_trimmed": base_trimmed, "held_trimmed": st["rss_trimmed"], "limit_trimmed": base_trimmed + conns * bound,
        "closed_rss": closed_rss, "base_fds": base_fds, "closed_fds": closed_fds,
    }


# ---- scenario: malformed input on every path --------------------------------------------

GOOD = [b"one", b"two", b"three"]


def _offending(kind: str, max_size: int, rng: random.Random) -> bytes:
    if kind == "random-bytes":
        return rng.randbytes(rng.randint(1, 4096))
    if kind == "header-4GiB":
        return b"\xff\xff\xff\xff" + b"x" * 100
    if kind == "header-max_size+1":
        return HEADER.pack(max_size + 1) + b"x" * 100
    if kind == "frames-then-bad-header":
        return b"".join(frame(p) for p in GOOD) + b"\xff\xff\xff\xfe"
    if kind in ("truncated-header", "reset-mid-header"):
        return HEADER.pack(max_size)[:rng.randint(1, 3)]
    if kind in ("truncated-payload", "reset-mid-payload"):
        return HEADER.pack(max_size) + b"p" * (max_size // 2)  # half a frame: held by the server
    if kind == "reset-replies-queued":
        return frame(b"!fill 65536") * 200  # 13 MB of replies asked for, never read
    raise ValueError(kind)


def malformed(port: int, pid: int, rounds: int = 5, per_kind: int = 20, max_size: int = 1 << 20, seed: int = 11,
              **_: Any) -> dict[str, Any]:
    """`rounds` rounds of `per_kind` connections of every KINDS at once;
    after each, the server's connections, descriptors, RSS and GC-tracked objects (after a
    collection), and a well-behaved client on a new connection; one is served during the round too."""
    ctl = Control(port)
    caller = Caller(port)
    caller.call(b"warm", b"warm")
    st0 = ctl.stats(do_gc=True)
    rng = random.Random(seed)
    out = []
    for r in range(rounds):
        kinds = [k for k in KINDS for _ in range(per_kind)]
        socks = open_many(port, len(kinds), ctl)
        ep = select.epoll()
        index = {}
        got: dict[int, bytes] = {}
        try:
            for i, (kind, s) in enumerate(zip(kinds, socks)):
                s.setblocking(True)
                s.settimeout(30)
                try:
                    s.sendall(_offending(kind, max_size, rng))
                except OSError:  # the server closed it already (random bytes): seen below
                    pass
                s.setblocking(False)
                if KINDS[kind] == "eof":
                    try:
                        s.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                if KINDS[kind] != "reset":
                    ep.register(s.fileno(), select.EPOLLIN)
                    index[s.fileno()] = i
                    got[i] = b""
            for kind, s in zip(kinds, socks):
                if KINDS[kind] == "reset":
                    reset(s)
            during = caller.call(b"during %d" % r, b"during %d" % r)
            closed: dict[int, bool] = {}
            deadline = time.monotonic() + 30
            while len(closed) < len(index) and time.monotonic() < deadline:
                for fd, _ in ep.poll(0.05):
                    i = index[fd]
                    try:
                        data = socks[i].recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        got[i] += data
                        continue
                    closed[i] = True
                    ep.unregister(fd)
        finally:
            ep.close()
            for s in socks:
                s.close()
        closed_by_server = collections.Counter(kinds[i] for i in closed)
        replies_ok = sum(got[i] == b"".join(frame(p) for p in GOOD)
                         for i, k in enumerate(kinds) if k == "frames-then-bad-header" and i in closed)
        # (descriptors counted by the server itself, as in st0: /proc/self/fd counts the listing's own)
        ctl.wait("the round's connections closed",
                 lambda st: st["connections"] == st0["connections"] and st["fds"] <= st0["fds"], 10)
        st = ctl.stats(do_gc=True)
        fresh = Caller(port)
        after = fresh.call(b"after %d" % r, b"after %d" % r)
        fresh.close()
        out.append({"round": r, "closed_by_server": dict(closed_by_server), "frames_before_bad": replies_ok,
                    "served_during": during, "served_after": after, "connections": st["connections"],
                    "fds": st["fds"], "rss": st["rss"], "rss_trimmed": st["rss_trimmed"], "objects": st["objects"],
                    "conn_objects": st["conn_objects"], "errors": st["errors"],
                    "timeouts": st["timeouts"]})
    caller.close()
    ctl.close()
    return {"per_kind": per_kind, "kinds": KINDS, "max_size": max_size, "seed": seed, "before": st0, "rounds": out}


DRIVERS = {"tenk": tenk, "slowloris": slowloris, "nonreading": nonreading, "malformed": malformed}


def main(argv: list[str]) -> None:
    role, params = argv[0], json.loads(argv[1])
    if role == "serve":
        serve(params)
        return
    result = probe(**params) if role == "probe" else DRIVERS[role](**params)
    print("RESULT", json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
