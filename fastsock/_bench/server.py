"""Child process that runs one Python server of one workload.

    python -m fastsock._bench.server run W2 stdlib-best '{"round_trips": 3000, ...}' <limit_s>
    python -m fastsock._bench.server probe

`run` listens on 127.0.0.1:0, prints "PORT <n>", serves, then prints "RESULT {json}"
(ops, seconds, cpu, ok and the implementation's extra figures). If the implementation
cannot run here it prints "UNAVAILABLE <reason>" instead. `probe` prints one JSON object:
{table: {impl: null or the reason it is unavailable}}, where a table is a workload ("W4") or,
for a workload with variants, a workload and variant ("W6-resp"; the run's params carry
"variant"). SIGALRM ends a run at its limit.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import sys
from types import ModuleType
from typing import Any

from .impls.common import Meter
from .spec import WORKLOADS

# Tests make one implementation crash mid-run with FASTSOCK_BENCH_CRASH=<impl key>.
CRASH_ENV = "FASTSOCK_BENCH_CRASH"


def workload_module(workload: str) -> ModuleType:
    """fastsock._bench.impls.w1 .. w6, m1."""
    return importlib.import_module(f"fastsock._bench.impls.{workload.lower()}")


def probe() -> dict[str, dict[str, Any]]:
    """Which Python servers can run in this interpreter (and backend), and why not."""
    out: dict[str, dict[str, Any]] = {}
    for key, wl in WORKLOADS.items():
        mod = workload_module(key)
        for variant in wl.variants:
            out[f"{key}-{variant}"] = {impl: mod.missing(impl, variant) for impl in wl.impls if impl in mod.SERVERS}
        if not wl.variants:
            out[key] = {impl: mod.missing(impl) for impl in wl.impls if impl in mod.SERVERS}
    return out


def crash_midway(listener: socket.socket, params: dict[str, Any], meter: Meter) -> dict[str, Any]:
    """Accept, read a little, then die as a crashing server would (for the cleanup tests)."""
    conn, _ = listener.accept()
    conn.recv(1024)
    os.kill(os.getpid(), signal.SIGKILL)
    return {}  # pragma: no cover


def listen() -> socket.socket:
    """A listening socket on 127.0.0.1 with a port chosen by the kernel."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def run(workload: str, impl: str, params: dict[str, Any], limit: int) -> int:
    signal.alarm(max(1, limit))  # default action: the process ends
    mod = workload_module(workload)
    if impl not in mod.SERVERS:
        print(f"UNAVAILABLE no {impl} server for {workload}", flush=True)
        return 0
    reason = mod.missing(impl, params["variant"]) if "variant" in params else mod.missing(impl)
    if reason:
        print(f"UNAVAILABLE {reason}", flush=True)
        return 0
    serve = mod.SERVERS[impl]
    if os.environ.get(CRASH_ENV) == impl:
        serve = crash_midway
    listener = listen()
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    meter = Meter()
    result = serve(listener, params, meter) or {}
    result.update(seconds=meter.seconds, cpu=meter.cpu)
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if result.get("ok", True) else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["probe"]:
        print(json.dumps(probe()), flush=True)
        return 0
    if len(argv) == 5 and argv[0] == "run":
        return run(argv[1], argv[2], json.loads(argv[3]), int(argv[4]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
