"""One W6 run: a server (a Python one, or redis-server / nginx), then the standard load
generator against it, on the other core.

The server's CPU clock (user+sys, every thread) is read just before the load generator starts
and just after it exits: server CPU per request = that difference / the requests the tool
completed (redis-benchmark: -n x its 4 tests; wrk: its request count). Before the load, one
HTTP request checks the answer is a 200 with a 13-byte body; after it, `GET key:__rand_int__`
checks that the SETs were stored (redis-benchmark's key and 3-byte value). A failed check, an
error the tool reports, a non-2xx response or a socket error fails the run.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import tempfile
import time
from typing import Any, Optional

from . import procs, toolparse, toolrefs, tools
from .pyclient import proc_cpu
from .runner import Case, RunFailed, Unavailable, _env, _status_text
from .spec import WORKLOADS


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (the references take a port number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(server: procs.Child, port: int, deadline: float) -> bool:
    """True once 127.0.0.1:`port` accepts a connection; False if the server exits or `deadline` passes."""
    while time.monotonic() < deadline and server.running():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def _exchange(port: int, request: bytes, done: Any, timeout: float = 5.0) -> bytes:
    """Send `request`, read until done(bytes read) is true (or EOF, or `timeout`)."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        while not done(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def check_http(port: int) -> Optional[str]:
    """None when GET / is answered 200 with a 13-byte body, else what was wrong."""
    def done(data: bytes) -> bool:
        head, sep, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        return bool(sep) and m is not None and len(body) >= int(m.group(1))

    try:
        data = _exchange(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", done)
    except OSError as exc:
        return f"GET / failed: {exc}"
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")) or len(body) != len(toolrefs.BODY):
        return f"GET / was not answered 200 with a {len(toolrefs.BODY)}-byte body: {data[:200]!r}"
    return None


def check_resp(port: int) -> Optional[str]:
    """None when GET key:__rand_int__ returns a 3-byte bulk string (redis-benchmark's SETs landed)."""
    try:
        data = _exchange(port, b"*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n", lambda d: len(d) >= 9)
    except OSError as exc:
        return f"GET key:__rand_int__ failed: {exc}"
    if not (data.startswith(b"$3\r\n") and len(data) == 9 and data.endswith(b"\r\n")):
        return f"GET key:__rand_int__ after redis-benchmark's SETs returned {data[:100]!r}, not its 3-byte value"
    return None


def _start_server(case: Case, impl: str, p: dict[str, Any], env: dict[str, str], core: Optional[int],
                  tmp: str, limit: int) -> tuple[procs.Child, int]:
    deadline = time.monotonic() + 30
    if impl == "c":
        port = free_port()
        server = procs.Child(f"{tools.SERVER[case.variant]} server", toolrefs.argv(case.variant, port, tmp),
                             env=env, core=core)
        if not wait_listening(server, port, deadline):
            status = server.wait(time.monotonic() + 1)
            raise RunFailed(f"{tools.SERVER[case.variant]} did not start ({_status_text(status)}): "
                            f"{toolrefs.log_tail(case.variant, tmp) or server.stderr_tail()}")
        return server, port
    argv = [sys.executable, "-m", "fastsock._bench.server", "run", case.workload, impl, json.dumps(p), str(limit)]
    server = procs.Child(f"{impl} server", argv, env=env, core=core)
    line = server.expect(("PORT ", "UNAVAILABLE"), deadline)
    if line is None:
        status = server.wait(time.monotonic() + 1)
        raise RunFailed(f"server did not start ({_status_text(status)}): {server.stderr_tail()}")
    if line.startswith("UNAVAILABLE"):
        raise Unavailable(line.partition(" ")[2] or "unavailable")
    return server, int(line.split()[1])


def run_once(case: Case, impl: str, p: dict[str, Any], env: dict[str, str],
             cores: tuple[Optional[int], Optional[int]]) -> list[dict[str, Any]]:
    """One repetition of W6 (`case.variant`: "resp" or "http"); raises RunFailed or
    Unavailable; leaves no process behind."""
    limit = WORKLOADS[case.workload].limit_s
    server = client = None
    with tempfile.TemporaryDirectory(prefix="fastsock-w6-") as tmp:
        try:
            server, port = _start_server(case, impl, p, env, cores[0], tmp, limit)
            if case.variant == "http":
                problem = check_http(port)
                if problem:
                    raise RunFailed(problem)
            deadline = time.monotonic() + limit
            cpu0, t0 = proc_cpu(server.pid), time.perf_counter()
            client = procs.Child(tools.CLIENT[case.variant], tools.client_argv(case.variant, port, p),
                                 env=_env("stdlib-best"), core=cores[1])
            out = client.read_all(deadline)
            status, client_cpu = client.wait_cpu(time.monotonic() + 5)
            seconds, cpu1 = time.perf_counter() - t0, proc_cpu(server.pid)
            if not server.running():
                raise RunFailed(f"server exited during the run ({_status_text(server.proc.poll())}): "
                                f"{server.stderr_tail()}")
            if out is None or status != 0:
                raise RunFailed(f"{tools.CLIENT[case.variant]} failed ({_status_text(status)}"
                                f"{', past the time limit' if out is None else ''}): "
                                f"{client.stderr_tail() or (out or '')[-300:]}")
            try:
                if case.variant == "resp":
                    res = toolparse.redis_benchmark(out, client.stderr_tail(2000), int(p["requests"]))
                else:
                    res = toolparse.wrk(out)
            except toolparse.BadOutput as exc:
                raise RunFailed(str(exc)) from None
            if case.variant == "resp":
                problem = check_resp(port)
                if problem:
                    raise RunFailed(problem)
        finally:
            if client is not None:
                client.kill()
            if server is not None:
                server.terminate(grace=1.0)
    server_cpu = cpu1 - cpu0 if cpu0 >= 0 and cpu1 >= 0 else -1.0
    ops = res["ops"]
    return [{
        "point": None, "ops": ops, "seconds": res["seconds"], "value": res["rps"],
        "server_cpu": server_cpu, "client_cpu": client_cpu,
        "server_cpu_per_op": server_cpu / ops if server_cpu >= 0 else None,
        # the load generator's wall time, connecting and between tests included
        "server_cpu_pct": 100 * server_cpu / seconds if server_cpu >= 0 else None,
        "client_cpu_pct": 100 * client_cpu / seconds if client_cpu >= 0 else None,
        "p50_us": res["p50_us"], "p99_us": res["p99_us"], "client": res,
    }]
