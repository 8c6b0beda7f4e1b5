"""The Python load generator, used when no C compiler is present, and M1's client.

Same command line and RESULT line as the C clients in c/ (`w1 client <port> ...`). It is
slower than the C clients, so the runner notes that figures may be client-bound.

`m1 client <port> <server_pid> <conns> <warmup_conns> <limit_s>` is the idle-connection
memory measurement (always this Python client: it measures the server's memory, not its
speed): it raises its own RLIMIT_NOFILE, opens <warmup_conns> connections, makes each do one
request, waits until the server is idle, reads the server's VmRSS (/proc/<pid>/status),
opens <conns> more connections (never more than WINDOW ahead of what the server has
accepted, so no listen backlog overflows), waits until the server holds a descriptor for
every one of them (/proc/<pid>/fd: the side channel that works for any server, C included)
and is idle again, and reads VmRSS again: connections that never sent a byte. Then each of
them sends one W5 request (64-byte payload, 4-byte length prefix) and checks the reply, and
VmRSS is read once more when the server is idle: what a served connection keeps. The
connections are closed with a reset (no TIME_WAIT).
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import time
from typing import Any, Optional


def _cpu() -> float:
    return time.process_time()


def _connect(port: int, nodelay: bool = False) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _drain_until_close(sock: socket.socket) -> None:
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(65536):
        pass


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * (len(sorted_values) - 1) + 0.5))]


def w1(port: int, total: int) -> dict[str, Any]:
    chunk = b"x" * (256 * 1024)
    sock = _connect(port)
    t0, c0 = time.perf_counter(), _cpu()
    sent = 0
    while sent < total:
        n = min(len(chunk), total - sent)
        sock.sendall(chunk if n == len(chunk) else chunk[:n])
        sent += n
    _drain_until_close(sock)
    return {"bytes": sent, "seconds": time.perf_counter() - t0, "cpu": _cpu() - c0}


def _recv_exactly(sock: socket.socket, buf: memoryview) -> None:
    got = 0
    while got < len(buf):
        n = sock.recv_into(buf[got:])
        if not n:
            raise EOFError("server closed the connection")
        got += n


def w2(port: int, count: int, warmup: int, payload: int) -> dict[str, Any]:
    msg = struct.pack(">I", payload) + b"p" * payload
    reply = memoryview(bytearray(len(msg)))
    sock = _connect(port, nodelay=True)
    for _ in range(warmup):
        sock.sendall(msg)
        _recv_exactly(sock, reply)
    lat = []
    t0, c0 = time.perf_counter(), _cpu()
    clock = time.perf_counter
    for _ in range(count):
        s = clock()
        sock.sendall(msg)
        _recv_exactly(sock, reply)
        lat.append(clock() - s)
    secs, cpu = time.perf_counter() - t0, _cpu() - c0
    sock.close()
    lat.sort()
    return {"ops": count, "seconds": secs, "cpu": cpu, "p50_us": _quantile(lat, 0.5) * 1e6,
            "p99_us": _quantile(lat, 0.99) * 1e6, "ok": bytes(reply) == msg}


def w3(port: int, frames: int, payload: int) -> dict[str, Any]:
    frame = struct.pack(">I", payload) + b"f" * payload
    per_batch = max(1, (128 * 1024) // len(frame))
    batch = frame * per_batch
    sock = _connect(port)
    t0, c0 = time.perf_counter(), _cpu()
    sent = 0
    while sent < frames:
        n = min(per_batch, frames - sent)
        sock.sendall(batch if n == per_batch else frame * n)
        sent += n
    _drain_until_close(sock)
    return {"ops": sent, "seconds": time.perf_counter() - t0, "cpu": _cpu() - c0}


def proc_cpu(pid: int) -> float:
    """CPU seconds (user+sys, all threads) of process `pid`: its CPU-time clock, else /proc/<pid>/stat."""
    try:  # Linux encodes a process's CPU clock id as ((~pid) << 3) | CPUCLOCK_SCHED
        return time.clock_gettime(((~pid) << 3) | 2)
    except (OSError, OverflowError, AttributeError):
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return -1.0


def _open_connections(port: int, nconns: int) -> tuple[selectors.BaseSelector, list[socket.socket]]:
    """nconns non-blocking TCP_NODELAY connections to port, registered for reading with their
    index as data."""
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(nconns):
        sock = _connect(port, nodelay=True)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, i)
        conns.append(sock)
    return sel, conns


def w4_point(port: int, pid: int, nconns: int, seconds: float, size: int) -> dict[str, Any]:
    msg = b"e" * size
    sel, conns = _open_connections(port, nconns)
    got = [0] * nconns
    sent_at = [0.0] * nconns
    lat: list[float] = []
    s0, c0, t0 = proc_cpu(pid), _cpu(), time.perf_counter()
    deadline = t0 + seconds
    for i, sock in enumerate(conns):
        sent_at[i] = time.perf_counter()
        sock.sendall(msg)
    active = nconns
    while active:
        events = sel.select(timeout=5.0)
        if not events:
            raise TimeoutError("server stopped answering")
        now = time.perf_counter()
        for key, _ in events:
            i = key.data
            sock = conns[i]
            data = sock.recv(65536)
            if not data:
                raise EOFError("server closed a connection")
            got[i] += len(data)
            if got[i] < size:
                continue
            lat.append(now - sent_at[i])
            got[i] = 0
            if now < deadline:
                sent_at[i] = now
                sock.sendall(msg)
            else:
                sel.unregister(sock)
                active -= 1
    secs, cpu, s1 = time.perf_counter() - t0, _cpu() - c0, proc_cpu(pid)
    for sock in conns:
        sock.close()
    lat.sort()
    return {"conns": nconns, "ops": len(lat), "seconds": secs, "cpu": cpu,
            "server_cpu": s1 - s0 if s0 >= 0 and s1 >= 0 else -1.0,
            "p50_us": _quantile(lat, 0.5) * 1e6, "p99_us": _quantile(lat, 0.99) * 1e6}


def w5_point(port: int, pid: int, nconns: int, seconds: float, warmup: float, depth: int,
             payload: int) -> dict[str, Any]:
    """W5 as c/w5.c does it: `depth` requests in flight per connection, every reply checked
    against its request, one send of the new requests per read."""
    header = struct.Struct(">I")
    frame = 4 + payload

    def make(conn: int, seq: int) -> bytes:
        head = seq.to_bytes(8, "little") + conn.to_bytes(4, "little")
        return head + bytes((seq * 31 + conn * 7 + i) & 0xFF for i in range(12, payload))

    sel, conns = _open_connections(port, nconns)
    sent = [0] * nconns
    recvd = [0] * nconns
    rest = [b""] * nconns
    sent_at = [[0.0] * depth for _ in range(nconns)]
    lat: list[float] = []
    clock = time.perf_counter

    def send(i: int, count: int) -> None:
        now = clock()
        out = []
        for _ in range(count):
            out.append(header.pack(payload) + make(i, sent[i]))
            sent_at[i][sent[i] % depth] = now
            sent[i] += 1
        conns[i].setblocking(True)
        conns[i].sendall(b"".join(out))
        conns[i].setblocking(False)

    t0 = clock()
    m0, m1 = t0 + warmup, t0 + warmup + seconds
    phase = 0  # 0 warm-up, 1 measured, 2 draining
    s0 = s1 = c0 = c1 = tm0 = tm1 = 0.0
    ops = 0
    for i in range(nconns):
        send(i, depth)
    active = nconns
    while active:
        events = sel.select(timeout=5.0)
        if not events:
            raise TimeoutError("server stopped answering")
        now = clock()
        if phase == 0 and now >= m0:
            phase, tm0, s0, c0 = 1, now, proc_cpu(pid), _cpu()
        if phase == 1 and now >= m1:
            phase, tm1, s1, c1 = 2, now, proc_cpu(pid), _cpu()
        for key, _ in events:
            i = key.data
            data = conns[i].recv(65536)
            if not data:
                raise EOFError("server closed a connection")
            data = rest[i] + data
            pos, done = 0, 0
            while len(data) - pos >= frame:
                if header.unpack_from(data, pos)[0] != payload:
                    raise ValueError("reply with a wrong length prefix")
                if recvd[i] >= sent[i] or data[pos + 4:pos + frame] != make(i, recvd[i]):
                    raise ValueError("reply payload does not match its request")
                if phase == 1:
                    lat.append(now - sent_at[i][recvd[i] % depth])
                    ops += 1
                recvd[i] += 1
                done += 1
                pos += frame
            rest[i] = data[pos:]
            if phase < 2:
                if done:
                    send(i, done)
            elif recvd[i] == sent[i]:
                sel.unregister(conns[i])
                active -= 1
    for sock in conns:
        sock.close()
    lat.sort()
    return {"conns": nconns, "ops": ops, "seconds": tm1 - tm0, "cpu": c1 - c0,
            "server_cpu": s1 - s0 if s0 >= 0 and s1 >= 0 else -1.0,
            "p50_us": _quantile(lat, 0.5) * 1e6, "p99_us": _quantile(lat, 0.99) * 1e6,
            "checked": sum(recvd), "depth": depth}


WINDOW = 90  # M1: connections opened ahead of the server's accepts (asyncio listens with backlog 100)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1])
    raise OSError(f"no VmRSS for process {pid}")


# Whether /proc/<pid>/fd reports its entry count as its size (decided on first use). Set
# before the function that declares it global (PyPy refuses the annotation after that).
_FDS_BY_STAT: Optional[bool] = None


def _fds(pid: int) -> int:
    """Descriptors open in process `pid`: stat's size of /proc/<pid>/fd (Linux 6.2+, O(1)),
    else the number of its entries."""
    global _FDS_BY_STAT
    path = f"/proc/{pid}/fd"
    if _FDS_BY_STAT is None:
        _FDS_BY_STAT = os.stat(path).st_size > 0
    return os.stat(path).st_size if _FDS_BY_STAT else len(os.listdir(path))



def _settle(pid: int, deadline: float) -> None:
    """Wait until the server is idle: its CPU clock and VmRSS unchanged over 50 ms."""
    before = (proc_cpu(pid), _rss_kib(pid))
    while time.monotonic() < deadline:
        time.sleep(0.05)
        after = (proc_cpu(pid), _rss_kib(pid))
        if after[0] - before[0] < 0.0005 and after[1] == before[1]:
            return
        before = after
    raise TimeoutError("the server never became idle")


def _open(port: int, socks: list[socket.socket]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST: no TIME_WAIT
    socks.append(sock)
    sock.connect(("127.0.0.1", port))


M1_REQUEST = struct.pack(">I", 64) + bytes(range(64))  # a W5 request: echo and RPC servers answer it alike


def _one_request_each(socks: list[socket.socket], deadline: float) -> None:
    """One request and its (checked) reply on every connection, a chunk of connections at a time."""
    reply = bytearray(len(M1_REQUEST))
    view = memoryview(reply)
    for first in range(0, len(socks), 512):
        chunk = socks[first:first + 512]
        for sock in chunk:
            sock.sendall(M1_REQUEST)
        for sock in chunk:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            _recv_exactly(sock, view)
            if reply != M1_REQUEST:
                raise ValueError("the reply does not match the request")


def m1(port: int, pid: int, conns: int, warmup: int) -> dict[str, Any]:
    need = conns + warmup + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SystemExit(f"the hard RLIMIT_NOFILE is {hard}; {conns} connections need {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    deadline = time.monotonic() + 60
    socks: list[socket.socket] = []
    try:
        base = _fds(pid)
        for _ in range(warmup):  # the server's first connections set up what every later one reuses
            _open(port, socks)
        while _fds(pid) < base + warmup:
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not accept the warm-up connections")
            time.sleep(0.005)
        _one_request_each(socks, deadline)  # and its first requests (buffers, pools, ...)
        _settle(pid, deadline)
        rss0, fd0, s0, c0, t0 = _rss_kib(pid), _fds(pid), proc_cpu(pid), _cpu(), time.perf_counter()
        opened = 0
        while True:
            accepted = _fds(pid) - fd0
            if accepted >= conns:
                break
            ahead = min(conns - opened, accepted + WINDOW - opened)
            for _ in range(ahead):
                _open(port, socks)
            opened += max(0, ahead)
            if ahead <= 0:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the server accepted {accepted} of {conns} connections")
                time.sleep(0.001)
        t_accepted = time.perf_counter()
        _settle(pid, deadline)
        rss1, fd1, s1, c1 = _rss_kib(pid), _fds(pid), proc_cpu(pid), _cpu()
        # then every connection serves one request and goes idle again: what it keeps afterwards
        _one_request_each(socks[warmup:], deadline)
        _settle(pid, deadline)
        rss2 = _rss_kib(pid)
    finally:
        for sock in socks:
            sock.close()
    return {"conns": conns, "accepted": fd1 - fd0, "rss_before_kib": rss0, "rss_after_kib": rss1,
            "rss_used_kib": rss2, "fds_before": fd0, "fds_after": fd1, "seconds": t_accepted - t0,
            "cpu": c1 - c0, "server_cpu": s1 - s0 if s0 >= 0 and s1 >= 0 else -1.0, "warmup_conns": warmup}


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "client":
        print("usage: python -m fastsock._bench.pyclient w1|w2|w3|w4|w5|m1 client <port> ... <limit_s>",
              file=sys.stderr)
        return 2
    signal.alarm(max(1, int(argv[-1])))
    w, a = argv[0], argv[2:-1]
    if w == "w1":
        res = w1(int(a[0]), int(a[1]))
    elif w == "w2":
        res = w2(int(a[0]), int(a[1]), int(a[2]), int(a[3]))
    elif w == "w3":
        res = w3(int(a[0]), int(a[1]), int(a[2]))
    elif w == "w4":
        points = [int(n) for n in a[2].split(",") if n]
        res = {"points": [w4_point(int(a[0]), int(a[1]), n, float(a[3]), int(a[4])) for n in points]}
    elif w == "w5":
        points = [int(n) for n in a[2].split(",") if n]
        res = {"points": [w5_point(int(a[0]), int(a[1]), n, float(a[3]), float(a[4]), int(a[5]), int(a[6]))
                          for n in points]}
    elif w == "m1":
        res = m1(int(a[0]), int(a[1]), int(a[2]), int(a[3]))
    else:
        print(f"unknown workload {w}", file=sys.stderr)
        return 2
    print("RESULT " + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
