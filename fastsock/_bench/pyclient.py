"""The Python load generator, used only when no C compiler is present.

Same command line and RESULT line as the C clients in c/ (`w1 client <port> ...`). It is
slower than the C clients, so the runner notes that figures may be client-bound.

"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from typing import Any


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


def w4_point(port: int, pid: int, nconns: int, seconds: float, size: int) -> dict[str, Any]:
    msg = b"e" * size
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(nconns):
        sock = _connect(port, nodelay=True)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, i)
        conns.append(sock)
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

    sel = selectors.DefaultSelector()
    conns = []
    for i in range(nconns):
        sock = _connect(port, nodelay=True)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, i)
        conns.append(sock)
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


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "client":
        print("usage: python -m fastsock._bench.pyclient w1|w2|w3|w4|w5 client <port> ... <limit_s>",
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
    else:
        print(f"unknown workload {w}", file=sys.stderr)
        return 2
    print("RESULT " + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
