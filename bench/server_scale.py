"""fastsock.Server at scale and under hostile clients: the figures of the README.

    python bench/server_scale.py [--backend c|python|both] [--quick] [--json PATH]

Runs the scenarios of tests/scaleutil.py (the ones tests/test_server_scale.py asserts on), with
the server on core 0 and the clients on core 1 where there are two, and prints one Markdown
table, a column per backend:
- 10,000 connections each sending a framed request once a second for 10 s (--quick: 3 s):
  requests answered, latency p50/p99 seen by the clients, the server's RSS per connection;
- slowloris: 1,000 connections trickling one byte per 100 ms with frame_timeout=2: when each
  was closed after its first byte, and a well-behaved client's p99 latency without and during
  the attack (in its own process), with their ratio;
- 100 clients that pipeline requests for 64 KiB replies and never read: the server's RSS in
  use per non-reader against the documented bound (max_buffer + high_water + one reply);
- malformed input (random bytes, bad and oversized headers, truncated frames, resets
  mid-frame), in rounds of 180 connections: descriptors and RSS before and after.
Every figure is one run on this machine: latencies on a shared machine move from run to run.
Linux only (/proc, epoll).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))

import scaleutil  # (from tests/: the scenarios the tests assert on)

MiB = 1 << 20


def _scenarios(quick: bool) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("tenk", {"conns": 10_000, "seconds": 3 if quick else 10}),
        ("slowloris", {"conns": 1000, "frame_timeout": 2.0, "pace": 0.1, "baseline": True}),
        ("nonreading", {"conns": 100, "reply": 65536}),
        ("malformed", {"rounds": 3 if quick else 6, "per_kind": 20}),
    ]


def _tenk(r: dict[str, Any]) -> list[tuple[str, str]]:
    n = r["conns"]
    return [
        (f"{n:,} connections x 1 request/s for {r['seconds']} s: answered",
         f"{r['answered']:,} of {r['expected']:,} ({r['wrong']} wrong)"),
        ("  latency p50 / p99 (ms)", f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}"),
        ("  server RSS per connection, idle / during requests (bytes)",
         f"{(r['idle_rss'] - r['base_rss']) // n:,} / {(r['peak_rss'] - r['base_rss']) // n:,}"),
        ("  server RSS before / at 10k / after closing (MiB)",
         f"{r['base_rss'] / MiB:.1f} / {r['peak_rss'] / MiB:.1f} / {r['closed_rss'] / MiB:.1f}"),
    ]


def _slowloris(r: dict[str, Any]) -> list[tuple[str, str]]:
    base, during = r["baseline"], r["during"]
    return [
        (f"slowloris: {r['conns']:,} x 1 byte / {r['pace'] * 1000:.0f} ms, frame_timeout={r['frame_timeout']:g}: "
         "closed", f"{r['closed']:,} (frame timeouts {r['server_timeouts']:,}, frames completed {r['completed']})"),
        ("  closed after the first byte, min / median / max (s)",
         f"{r['close_min_s']:.3f} / {r['close_median_s']:.3f} / {r['close_max_s']:.3f}"),
        ("  well-behaved client p99 without / during the attack (ms)",
         f"{base['p99_ms']:.2f} / {during['p99_ms']:.2f} = {during['p99_ms'] / base['p99_ms']:.2f}x"),
        ("  well-behaved requests answered without / during", f"{base['answered']} / {during['answered']}"),
    ]


def _nonreading(r: dict[str, Any]) -> list[tuple[str, str]]:
    n, bound = r["conns"], r["bound_per_conn"]
    per = (r["held_trimmed"] - r["base_trimmed"]) / n
    return [
        (f"{n} non-reading clients (64 KiB replies, high_water 256 KiB): paused", f"{r['paused_at_end']} of {n}"),
        ("  server RSS in use per non-reader / documented bound (KiB)",
         f"{per / 1024:.0f} / {bound / 1024:.0f} = {per / bound:.2f}x"),
        ("  peak RSS over baseline (incl. the allocator's free memory) / bound x n (MiB)",
         f"{(r['peak_rss'] - r['base_rss']) / MiB:.1f} / {n * bound / MiB:.1f}"),
        ("  well-behaved client while the queues fill / once held: answered, p99 (ms)",
         f"{r['filling']['answered']}/{r['filling']['sent']}, {r['filling']['p99_ms']:.2f} / "
         f"{r['held']['answered']}/{r['held']['sent']}, {r['held']['p99_ms']:.2f}"),
        ("  bytes the kernel took per non-reader before the server queued (MiB)", f"{r['sent_per_conn'] / MiB:.1f}"),
    ]


def _malformed(r: dict[str, Any]) -> list[tuple[str, str]]:
    before, rounds = r["before"], r["rounds"]
    conns = r["per_kind"] * len(r["kinds"])
    offenders = sum(sum(rd["closed_by_server"].values()) for rd in rounds)
    seen = sum(how != "reset" for how in r["kinds"].values()) * r["per_kind"] * len(rounds)
    return [
        (f"malformed: {len(rounds)} rounds x {conns} connections ({len(r['kinds'])} kinds): closed by the server",
         f"{offenders} of {seen} visible; all served after: {all(rd['served_after'] for rd in rounds)}"),
        ("  server descriptors before / after each round", f"{before['fds']} / "
                                                           f"{','.join(str(rd['fds']) for rd in rounds)}"),
        ("  server RSS in use before / max after a round (MiB)",
         f"{before['rss_trimmed'] / MiB:.1f} / {max(rd['rss_trimmed'] for rd in rounds) / MiB:.1f}"),
        ("  server RSS (untrimmed) before / max after a round (MiB)",
         f"{before['rss'] / MiB:.1f} / {max(rd['rss'] for rd in rounds) / MiB:.1f}"),
    ]


ROWS: dict[str, Callable[[dict[str, Any]], list[tuple[str, str]]]] = {
    "tenk": _tenk, "slowloris": _slowloris, "nonreading": _nonreading, "malformed": _malformed,
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["c", "python", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="10k connections for 3 s, 3 malformed rounds")
    parser.add_argument("--json", metavar="PATH", help="write every raw result there")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("bench/server_scale.py needs Linux (/proc, epoll)", file=sys.stderr)
        return 2
    backends = ["c", "python"] if args.backend == "both" else [args.backend]
    results: dict[str, dict[str, Any]] = {b: {} for b in backends}
    cells: dict[str, dict[str, str]] = {}
    order: list[str] = []
    failed = False
    for backend in backends:
        for scenario, params in _scenarios(args.quick):
            print(f"running {scenario} on {backend} ...", file=sys.stderr, flush=True)
            shortfall = scaleutil.nofile_shortfall(scaleutil.needs_nofile(scenario, params))
            try:
                if shortfall:
                    raise RuntimeError(shortfall)
                result = scaleutil.run(scenario, backend, timeout=300, pin=True, **params)
                rows = ROWS[scenario](result)
            except Exception as exc:  # noqa: BLE001  (reported in the table, the others still run)
                failed = True
                result = {"error": str(exc)}
                rows = [(f"{scenario}", f"failed: {exc}"[:200])]
            results[backend][scenario] = result
            for label, value in rows:
                if label not in cells:
                    cells[label] = {}
                    order.append(label)
                cells[label][backend] = value
    names = {"c": "C", "python": "pure Python"}
    print("| figure | " + " | ".join(names[b] for b in backends) + " |")
    print("|---|" + "---|" * len(backends))
    for label in order:
        print(f"| {label} | " + " | ".join(cells[label].get(b, "") for b in backends) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
