"""fastsock.Server at scale and under hostile clients: the figures of the README.

    python bench/server_scale.py [--backend c|python|both] [--quick] [--repeat N] [--pin] [--json PATH]

Runs the scenarios of tests/scale_scenarios.py (the ones tests/test_server_scale.py asserts
on), each --repeat times (default 3), and prints one Markdown table, a column per backend,
medians with their min-max:
- 10,000 connections each sending a framed request once a second for 10 s (--quick: 3 s):
  requests answered, latency p50/p99 seen by the clients, the server's RSS per connection;
- slowloris: 1,000 connections trickling one byte per 100 ms with frame_timeout=2: when each
  was closed after its first byte, and a well-behaved client's p99 latency without and during
  the attack (in its own process), with their ratio;
- 100 clients that pipeline requests for 64 KiB replies and never read: the server's RSS in
  use per non-reader against the documented bound (max_buffer + high_water + one reply);
- malformed input (random bytes, bad and oversized headers, truncated frames, resets
  mid-frame), in rounds of 180 connections: descriptors and RSS before and after.
Latencies on a shared machine move a lot from run to run: compare the medians. Linux only
(/proc, epoll).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Any, Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))

import scaleutil  # (from tests/: the scenarios the tests assert on, and how to run them)

MiB = 1 << 20


def _scenarios(quick: bool) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("tenk", {"conns": 10_000, "seconds": 3 if quick else 10}),
        ("slowloris", {"conns": 1000, "frame_timeout": 2.0, "pace": 0.1, "baseline": True}),
        ("nonreading", {"conns": 100, "reply": 65536}),
        ("malformed", {"rounds": 3 if quick else 6, "per_kind": 20}),
    ]


Results = list[dict[str, Any]]


def _fig(rs: Results, value: Callable[[dict[str, Any]], float], fmt: str = "{:.2f}") -> str:
    """The median of `value` over the repetitions, with their min-max when there are several."""
    values = sorted(value(r) for r in rs)
    text = fmt.format(statistics.median(values))
    return text if len(values) == 1 else f"{text} ({fmt.format(values[0])}-{fmt.format(values[-1])})"


def _total(rs: Results, value: Callable[[dict[str, Any]], int]) -> int:
    return sum(value(r) for r in rs)


def _tenk(rs: Results) -> list[tuple[str, str]]:
    r0 = rs[0]
    n = r0["conns"]
    return [
        (f"{n:,} connections x 1 request/s for {r0['seconds']} s: answered",
         f"{_total(rs, lambda r: r['answered']):,} of {_total(rs, lambda r: r['expected']):,} "
         f"({_total(rs, lambda r: r['wrong'])} wrong)"),
        ("  latency p50 (ms)", _fig(rs, lambda r: r["p50_ms"])),
        ("  latency p99 (ms)", _fig(rs, lambda r: r["p99_ms"])),
        ("  server RSS per connection, idle (bytes)",
         _fig(rs, lambda r: (r["idle_rss"] - r["base_rss"]) / n, "{:,.0f}")),
        ("  server RSS per connection, during the requests (bytes)",
         _fig(rs, lambda r: (r["peak_rss"] - r["base_rss"]) / n, "{:,.0f}")),
        ("  server RSS before / at 10k / after closing (MiB)",
         f"{_fig(rs, lambda r: r['base_rss'] / MiB, '{:.1f}')} / {_fig(rs, lambda r: r['peak_rss'] / MiB, '{:.1f}')} "
         f"/ {_fig(rs, lambda r: r['closed_rss'] / MiB, '{:.1f}')}"),
    ]


def _slowloris(rs: Results) -> list[tuple[str, str]]:
    r0 = rs[0]
    return [
        (f"slowloris: {r0['conns']:,} x 1 byte / {r0['pace'] * 1000:.0f} ms, frame_timeout={r0['frame_timeout']:g}: "
         "closed", f"{_total(rs, lambda r: r['closed']):,} of {_total(rs, lambda r: r['conns']):,} (frame timeouts "
                   f"{_total(rs, lambda r: r['server_timeouts']):,}, frames completed "
                   f"{_total(rs, lambda r: r['completed'])})"),
        ("  closed after the first byte, max (s)", _fig(rs, lambda r: r["close_max_s"], "{:.3f}")),
        ("  closed after the first byte, median (s)", _fig(rs, lambda r: r["close_median_s"], "{:.3f}")),
        ("  well-behaved client p99 without the attack (ms)", _fig(rs, lambda r: r["baseline"]["p99_ms"])),
        ("  well-behaved client p99 during the attack (ms)", _fig(rs, lambda r: r["during"]["p99_ms"])),
        ("  ratio during / without (each repetition's own pair)",
         _fig(rs, lambda r: r["during"]["p99_ms"] / r["baseline"]["p99_ms"], "{:.2f}x")),
        ("  well-behaved requests answered without / during",
         f"{_total(rs, lambda r: r['baseline']['answered'])} / {_total(rs, lambda r: r['during']['answered'])} "
         f"(of {_total(rs, lambda r: r['baseline']['sent'])} / {_total(rs, lambda r: r['during']['sent'])})"),
    ]


def _nonreading(rs: Results) -> list[tuple[str, str]]:
    r0 = rs[0]
    n, bound = r0["conns"], r0["bound_per_conn"]
    return [
        (f"{n} non-reading clients (64 KiB replies, high_water 256 KiB): paused",
         f"{_total(rs, lambda r: r['paused_at_end'])} of {n * len(rs)}"),
        (f"  server RSS in use per non-reader (KiB; documented bound {bound / 1024:.0f})",
         _fig(rs, lambda r: (r["held_trimmed"] - r["base_trimmed"]) / n / 1024, "{:.0f}")),
        (f"  peak RSS over baseline, with the allocator's free memory (MiB; bound x {n}: {n * bound / MiB:.1f})",
         _fig(rs, lambda r: (r["peak_rss"] - r["base_rss"]) / MiB, "{:.1f}")),
        ("  well-behaved client p99 while the queues fill (ms)", _fig(rs, lambda r: r["filling"]["p99_ms"])),
        ("  well-behaved client p99 once they are held (ms)", _fig(rs, lambda r: r["held"]["p99_ms"])),
        ("  well-behaved requests answered",
         f"{_total(rs, lambda r: r['filling']['answered'] + r['held']['answered'])} of "
         f"{_total(rs, lambda r: r['filling']['sent'] + r['held']['sent'])}"),
        ("  bytes the kernel took per non-reader before the server queued (MiB)",
         _fig(rs, lambda r: r["sent_per_conn"] / MiB, "{:.1f}")),
    ]


def _malformed(rs: Results) -> list[tuple[str, str]]:
    r0 = rs[0]
    conns = r0["per_kind"] * len(r0["kinds"])
    visible = sum(how != "reset" for how in r0["kinds"].values()) * r0["per_kind"]
    rounds = [rd for r in rs for rd in r["rounds"]]
    return [
        (f"malformed: rounds of {conns} connections ({len(r0['kinds'])} kinds): closed by the server",
         f"{sum(sum(rd['closed_by_server'].values()) for rd in rounds)} of {visible * len(rounds)} visible in "
         f"{len(rounds)} rounds; served after each: {all(rd['served_after'] for rd in rounds)}"),
        ("  server descriptors before / after each round",
         "; ".join(f"{r['before']['fds']} / {','.join(str(rd['fds']) for rd in r['rounds'])}" for r in rs)),
        ("  server RSS in use before / max after a round (MiB)",
         f"{_fig(rs, lambda r: r['before']['rss_trimmed'] / MiB, '{:.1f}')} / "
         f"{_fig(rs, lambda r: max(rd['rss_trimmed'] for rd in r['rounds']) / MiB, '{:.1f}')}"),
        ("  server RSS with the allocator's free memory, before / max after a round (MiB)",
         f"{_fig(rs, lambda r: r['before']['rss'] / MiB, '{:.1f}')} / "
         f"{_fig(rs, lambda r: max(rd['rss'] for rd in r['rounds']) / MiB, '{:.1f}')}"),
    ]


ROWS: dict[str, Callable[[Results], list[tuple[str, str]]]] = {
    "tenk": _tenk, "slowloris": _slowloris, "nonreading": _nonreading, "malformed": _malformed,
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["c", "python", "both"], default="both")
    parser.add_argument("--quick", action="store_true",
                        help="10k connections for 3 s, 3 malformed rounds, 1 repetition")
    parser.add_argument("--repeat", type=int, metavar="N", help="repetitions of every scenario (default 3, quick 1): "
                        "the table shows medians and min-max")
    parser.add_argument("--pin", action="store_true", help="server on core 0, clients on core 1 (a quiet machine "
                        "only: on a shared one a pinned process cannot move off a busy core)")
    parser.add_argument("--json", metavar="PATH", help="write every raw result there")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("bench/server_scale.py needs Linux (/proc, epoll)", file=sys.stderr)
        return 2
    repeat = args.repeat or (1 if args.quick else 3)
    backends = ["c", "python"] if args.backend == "both" else [args.backend]
    results: dict[str, dict[str, Results]] = {b: {} for b in backends}
    errors: dict[tuple[str, str], str] = {}
    for rep in range(repeat):  # the backends alternate, so that a slow spell of the machine hits both
        for backend in backends:
            for scenario, params in _scenarios(args.quick):
                print(f"[{rep + 1}/{repeat}] {scenario} on {backend} ...", file=sys.stderr, flush=True)
                try:
                    shortfall = scaleutil.nofile_shortfall(scaleutil.needs_nofile(scenario, params))
                    if shortfall:
                        raise RuntimeError(shortfall)
                    result = scaleutil.run(scenario, backend, timeout=300, pin=args.pin, **params)
                    results[backend].setdefault(scenario, []).append(result)
                except Exception as exc:  # noqa: BLE001  (reported in the table, the others still run)
                    errors[backend, scenario] = str(exc)
    cells: dict[str, dict[str, str]] = {}
    order: list[str] = []
    for backend in backends:
        for scenario, _ in _scenarios(args.quick):
            rows = []
            if scenario in results[backend]:
                rows = ROWS[scenario](results[backend][scenario])
            if (backend, scenario) in errors:
                rows.append((f"{scenario}: failed runs", errors[backend, scenario][:200]))
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
            json.dump({"results": results, "errors": {f"{b} {s}": e for (b, s), e in errors.items()}}, f, indent=1)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
