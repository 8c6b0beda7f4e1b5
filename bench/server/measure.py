"""A quick self-measurement of fastsock.Server's CPU per request against the baselines of
W4 and W5 (shared/WORKLOADS.md), on this machine, in one run:

    python bench/server/measure.py [--reps 3] [--seconds 3] [--only w5] [--kinds a,b]

Each point runs a server process pinned to CPU 0 (bench/server/servers.py, or the C
reference) and a C load client pinned to CPU 1 (bench/server/w5.c, or fastsock's W4 C
client); the client reads the server's CPU time over the measured seconds. The figure is
server CPU microseconds per request, the median of --reps runs, with its ratio to the C
reference and to uvloop Protocol of the same run. Not the official `fastsock bench` rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CACHE = Path(tempfile.gettempdir()) / "fastsock-server-bench"

W5_KINDS = ["c-ref", "fastsock", "fastsock-batch", "fastsock-pure", "selectors", "uvloop-protocol",
            "asyncio-protocol"]
W4_KINDS = ["c-ref", "fastsock", "fastsock-pure", "selectors", "uvloop-protocol", "asyncio-protocol"]


def build() -> dict[str, str]:
    CACHE.mkdir(exist_ok=True)
    out = {}
    for name, src in (("w5", HERE / "w5.c"), ("w4", ROOT / "fastsock" / "_bench" / "c" / "w4.c")):
        exe = CACHE / name
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            subprocess.run(["cc", "-O2", "-std=c11", "-D_GNU_SOURCE", str(src), "-o", str(exe)], check=True)
        out[name] = str(exe)
    return out


def pinned(cpu: int):
    return lambda: os.sched_setaffinity(0, {cpu})


def start_server(workload: str, kind: str, exes: dict[str, str]) -> subprocess.Popen:
    env = dict(os.environ, BENCH_CPU="0")
    env.pop("FASTSOCK_PURE", None)
    if kind == "c-ref":
        cmd = [exes[workload], "server", "120"]
    else:
        if kind == "fastsock-pure":
            env["FASTSOCK_PURE"] = "1"
        cmd = [sys.executable, str(HERE / "servers.py"), workload, kind]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=pinned(0))
    line = proc.stdout.readline()
    if not line.startswith("PORT"):
        proc.kill()
        raise RuntimeError(f"{kind}: no PORT line ({line!r})")
    proc.port = int(line.split()[1])  # type: ignore[attr-defined]
    return proc


def run_point(workload: str, kind: str, conns: int, seconds: float, exes: dict[str, str]) -> float:
    """Server CPU µs per request for one run."""
    server = start_server(workload, kind, exes)
    try:
        if workload == "w5":
            cmd = [exes["w5"], "client", str(server.port), str(server.pid), str(conns), "16", "1.0",
                   str(seconds), "64", "120"]
        else:  # a warm-up point, then the measured one
            cmd = [exes["w4"], "client", str(server.port), str(server.pid), f"{conns},{conns}", str(seconds),
                   "1024", "120"]
        out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=pinned(1), timeout=120)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")]
        if not line:
            raise RuntimeError(f"{kind}: client failed: {out.stderr.strip()}")
        result = json.loads(line[0][len("RESULT"):])
        if workload == "w4":
            result = result["points"][-1]
        return 1e6 * result["server_cpu"] / result["ops"], result["ops"] / result["seconds"]
    finally:
        server.kill()
        server.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--only", choices=["w4", "w5"])
    ap.add_argument("--kinds", default="")
    ap.add_argument("--conns", default="")
    args = ap.parse_args()
    exes = build()
    points = []
    if args.only in (None, "w5"):
        points += [("w5", n, W5_KINDS) for n in (10, 100)]
    if args.only in (None, "w4"):
        points += [("w4", 100, W4_KINDS)]
    if args.conns:
        wanted = {int(n) for n in args.conns.split(",")}
        points = [p for p in points if p[1] in wanted]
    for workload, conns, kinds in points:
        if args.kinds:
            kinds = [k for k in kinds if k in args.kinds.split(",") or k == "c-ref"]
        cpu: dict[str, list[float]] = {k: [] for k in kinds}
        rate: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(args.reps):  # interleaved: drift on a shared machine hits every kind alike
            for kind in kinds:
                try:
                    us, rps = run_point(workload, kind, conns, args.seconds, exes)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    print(f"  {kind}: {exc}", file=sys.stderr)
                    continue
                cpu[kind].append(us)
                rate[kind].append(rps)
        med = {k: statistics.median(v) for k, v in cpu.items() if v}
        print(f"\n{workload.upper()} N={conns}: server CPU µs/request, median of {args.reps}")
        ref, uv = med.get("c-ref"), med.get("uvloop-protocol")
        for kind in kinds:
            if kind not in med:
                continue
            vs_c = f"{med[kind] / ref:5.2f}x C" if ref else ""
            vs_uv = f"{med[kind] / uv:5.2f}x uvloop" if uv else ""
            runs = " ".join(f"{v:.2f}" for v in cpu[kind])
            print(f"  {kind:18s} {med[kind]:6.2f} µs  {statistics.median(rate[kind]) / 1e3:7.1f}k req/s  "
                  f"{vs_c:10s} {vs_uv:14s} [{runs}]")


if __name__ == "__main__":
    main()
