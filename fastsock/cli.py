"""Command line: `fastsock bench` (the comparison runner) and `fastsock info`.

Also available as `python -m fastsock ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Optional

EXIT_USAGE = 2


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    from ._bench.spec import IMPLS, WORKLOADS

    parser = argparse.ArgumentParser(prog="fastsock", description="fastsock command line tools.")
    sub = parser.add_subparsers(dest="command", metavar="{bench,info}")
    wl_help = ", ".join(f"{w.key} {w.name}" for w in WORKLOADS.values())
    keys = ", ".join(WORKLOADS)
    bench = sub.add_parser(
        "bench", help=f"compare fastsock with the stdlib, asyncio, uvloop, gevent and C on workloads {keys}",
        description=f"Runs the workloads {keys} for every available implementation, each server in its own "
        "process with a C load generator on another core (W6: redis-benchmark and wrk, when installed, against "
        "the examples' RESP and HTTP code and against redis-server and nginx), and prints one table per "
        "workload with the ratios to stdlib best and to C.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="implementations: " + ", ".join(IMPLS) + "\nworkloads: " + wl_help,
    )
    bench.add_argument("--quick", action="store_true", help="small counts: the whole run in about three minutes")
    bench.add_argument("--workload", "-w", default=",".join(WORKLOADS), metavar="W1,W3",
                       help="comma-separated workloads (default: all)")
    bench.add_argument("--impl", "-i", default=None, metavar="NAME,...",
                       help="comma-separated implementations (default: all available; see the list below); "
                       "c and stdlib-best are always added, as every ratio needs them")
    bench.add_argument("--repeat", "-r", type=int, default=3, metavar="N",
                       help="repetitions per implementation; tables show the median and min-max (default 3)")
    bench.add_argument("--same-core", action="store_true",
                       help="pin server and client to the same core in every workload (default: different "
                       "cores, plus a same-core table for W2)")
    bench.add_argument("--json", metavar="PATH", help="write every raw figure, the machine and versions as JSON")
    bench.add_argument("--markdown", metavar="PATH", help="write the tables and summary as Markdown")
    bench.add_argument("--plot", metavar="PATH.png", help="write bar charts per workload (needs matplotlib)")
    bench.add_argument("--client", choices=("auto", "c", "python"), default="auto",
                       help="load generator: the C reference client (auto when a compiler is present) or Python")
    bench.add_argument("--list", action="store_true", help="list workloads and implementations, then exit")
    bench.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)  # tests: tiny counts
    info = sub.add_parser("info", help="show the backend, the poller and the kernel features fastsock detected")
    info.add_argument("--json", action="store_true", help="print the same as JSON")
    return parser


def _parse_bench(parser: argparse.ArgumentParser, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ._bench.runner import Options
    from ._bench.spec import BASELINE, IMPLS, REFERENCE, WORKLOADS

    bench_parser: argparse.ArgumentParser = parser._subparsers._group_actions[0].choices["bench"]  # type: ignore[union-attr,index]
    workloads = [w.upper() for w in _split(args.workload)]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown or not workloads:
        bench_parser.error(f"unknown workload {', '.join(unknown) or '(none)'}; choose from {', '.join(WORKLOADS)}")
    impls: Optional[list[str]] = None
    if args.impl is not None:
        impls = [i.lower() for i in _split(args.impl)]
        bad = [i for i in impls if i not in IMPLS]
        if bad or not impls:
            bench_parser.error(f"unknown implementation {', '.join(bad) or '(none)'}; choose from {', '.join(IMPLS)}")
        if not any(i in WORKLOADS[w].impls for w in workloads for i in impls):
            bench_parser.error("none of the chosen implementations runs in the chosen workloads")
        for ref in (REFERENCE, BASELINE):  # every ratio needs them, so they are always measured
            if ref not in impls:
                impls.append(ref)
    if args.repeat < 1:
        bench_parser.error("--repeat must be at least 1")
    if not args.scale > 0:
        bench_parser.error("--scale must be positive")
    if args.plot:
        from ._bench.plot import MISSING, have_matplotlib

        if not have_matplotlib():
            bench_parser.error(MISSING)
    for path in (args.json, args.markdown, args.plot):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            bench_parser.error(f"cannot write {path}: its directory does not exist")
    return Options(workloads=workloads, impls=impls, repeat=args.repeat, quick=args.quick,
                   same_core=args.same_core, client=args.client, scale=args.scale)


def cmd_list() -> int:
    from ._bench.spec import IMPLS, WORKLOADS, label

    for w in WORKLOADS.values():
        for table in [f"{w.key}-{v}" for v in w.variants] or [w.key]:
            print(f"{table} {w.name}: " + ", ".join(f"{i} ({label(table, i)})" for i in w.impls))
    print("implementations: " + ", ".join(IMPLS))
    return 0


def cmd_bench(opts, argv: Sequence[str]) -> int:  # type: ignore[no-untyped-def]
    from ._bench import creference, machine, procs, report
    from ._bench.progress import Progress
    from ._bench.runner import execute, make_plan

    command = "fastsock " + " ".join(shlex.quote(a) for a in argv)
    t0 = time.monotonic()
    interrupted = False
    with procs.guard():
        try:
            cref = creference.build()
            plan = make_plan(opts, cref)
            budget = sum(plan.estimates)
            print(f"fastsock bench: {len(plan.tasks)} runs ({', '.join(c.key for c in plan.cases)}; "
                  f"{opts.repeat} repetition{'s' * (opts.repeat > 1)}), estimated {budget:.0f} s"
                  + (" (--quick)" if opts.quick else ""), file=sys.stderr, flush=True)
            for note in plan.notes:
                print(f"note: {note}", file=sys.stderr, flush=True)
            progress = Progress(sys.stderr, plan.estimates, opts.repeat)
            procs.on_tick = progress.tick
            try:
                execute(plan, opts, cref, progress.update)
            finally:
                procs.on_tick = None
                progress.finish()
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: every child process was stopped; partial results follow", file=sys.stderr)
            if "plan" not in locals():
                return 130
    elapsed = time.monotonic() - t0
    desc = machine.describe(cref.compiler_version)
    print(report.render_text(plan, desc, command))
    print(f"({elapsed:.0f} s)", file=sys.stderr)
    if opts_json := getattr(opts, "_json", None):
        report.write_json(opts_json, report.to_json(plan, desc, list(argv), opts.__dict__, elapsed, interrupted))
    if path := getattr(opts, "_markdown", None):
        with open(path, "w", encoding="utf-8") as f:
            f.write(report.render_markdown(plan, desc, command))
    if path := getattr(opts, "_plot", None):
        from ._bench.plot import plot

        try:
            plot(plan, report.summarize(plan), path, f"{command}  ({machine.one_line(desc)})")
        except ValueError as exc:
            print(f"--plot: {exc}", file=sys.stderr)
    if interrupted:
        return 130
    return 1 if any(r.status == "failed" for r in plan.rows.values()) else 0


def cmd_info(as_json: bool = False) -> int:
    from ._bench import info

    d = info.describe()
    print(json.dumps(d, indent=1) if as_json else info.render(d))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `fastsock` console script and of `python -m fastsock`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except BrokenPipeError:  # e.g. `fastsock info | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        return cmd_info(args.json)
    if args.command == "bench":
        if args.list:
            return cmd_list()
        opts = _parse_bench(parser, args)
        opts._json, opts._markdown, opts._plot = args.json, args.markdown, args.plot
        return cmd_bench(opts, argv)
    parser.print_help(sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
