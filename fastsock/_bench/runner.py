"""The comparison loop: every workload x implementation x repetition, each in its own processes.

One run = one server process (the implementation under test, or the C reference server)
and one client process (the C reference client: the load generator), pinned to different
cores on machines with at least 2 (or to the same core for W2's same-core table). Ports
come from the kernel (bind to port 0, the server prints it). A run that fails, hangs past
its limit or loses its server is recorded as failed and the run goes on; every child is
killed and reaped before the next run starts.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from . import creference, procs, tools
from .spec import IMPLS, WORKLOADS, Workload

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory that holds fastsock/


@dataclass(frozen=True)
class Case:
    """One table: a workload (and its variant: W6's protocol) with a placement of server and
    client ("split" or "same" core)."""

    workload: str
    placement: str
    variant: str = ""

    @property
    def table(self) -> str:
        """The workload and variant: "W4", "W6-resp" (the probe's and the labels' key)."""
        return f"{self.workload}-{self.variant}" if self.variant else self.workload

    @property
    def key(self) -> str:
        return self.table if self.placement == "split" else f"{self.table}-same-core"

    @property
    def title(self) -> str:
        wl = WORKLOADS[self.workload]
        where = ("server and client on different cores" if self.placement == "split"
                 else "server and client on the same core")
        what = f": {tools.VARIANT_TITLES[self.variant]}" if self.variant else ""
        return f"{wl.key} {wl.name}{what} ({where})"


@dataclass
class Options:
    """What to run (the parsed command line)."""

    workloads: list[str]
    impls: Optional[list[str]] = None  # None: every implementation
    repeat: int = 3
    quick: bool = False
    same_core: bool = False
    client: str = "auto"  # "auto" (C when compiled, else Python), "c" or "python"
    scale: float = 1.0  # multiplies the counts (tests use tiny runs)


@dataclass
class Row:
    """Every repetition of one implementation in one case."""

    case: str
    impl: str
    status: str = "pending"  # ok | failed | unavailable | skipped
    reason: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)  # one entry per repetition
    failures: list[str] = field(default_factory=list)


class RunFailed(Exception):
    """A run did not complete (the reason is the message)."""


class Unavailable(Exception):
    """The implementation cannot run here (missing library or feature)."""


def cases(opts: Options, usable_cores: int) -> list[Case]:
    out = []
    for w in opts.workloads:
        for variant in WORKLOADS[w].variants or ("",):
            if opts.same_core or usable_cores < 2:
                out.append(Case(w, "same", variant))
            else:
                out.append(Case(w, "split", variant))
                if w == "W2":  # across cores every stack waits on wake-ups; same core shows the CPU cost
                    out.append(Case(w, "same", variant))
    return out


def params_for(wl: Workload, opts: Options) -> dict[str, Any]:
    p = dict(wl.quick if opts.quick else wl.full)
    if opts.scale != 1.0:
        for k in ("bytes", "round_trips", "warmup", "frames", "requests"):
            if k in p:
                p[k] = max(1, int(p[k] * opts.scale))
        if wl.kind == "tool":  # wrk -d takes whole seconds
            p["seconds"] = max(1, round(float(p["seconds"]) * opts.scale))
            p["requests"] = max(1000, p["requests"])
        elif "seconds" in p:
            # A floor long enough that a timed window on a loaded machine still sees
            # requests (at 50 ms one W4/W5 row once counted none).
            p["seconds"] = max(0.2, float(p["seconds"]) * opts.scale)
        if "warmup_s" in p:
            p["warmup_s"] = max(0.02, float(p["warmup_s"]) * opts.scale)
        if "conns" in p:
            p["conns"] = max(50, int(p["conns"] * opts.scale))
        if "bytes" in p:
            p["bytes"] = max(256 * 1024, p["bytes"] // (256 * 1024) * 256 * 1024)
    return p


def estimate_seconds(case: Case, impl: str, p: dict[str, Any]) -> float:
    """A rough duration of one run, for the budget and the remaining-time display."""
    start = 0.03 if IMPLS[impl].reference else 0.2
    w = case.workload
    if w == "W1":
        return start + float(p["bytes"]) / 1.2e9
    if w == "W2":
        return start + float(p["round_trips"] + p["warmup"]) / (40e3 if case.placement == "same" else 15e3)
    if w == "W3":
        return start + float(p["frames"]) / (0.3e6 if impl == "stdlib-naive" else 1.2e6)
    if WORKLOADS[w].kind == "memory":  # connecting (paced by the server's accepts), settling, closing
        return start + 0.3 + float(p["conns"]) * 1e-4
    if WORKLOADS[w].kind == "tool":
        return tools.estimate_seconds(case.variant, impl, p)
    return start + len(p["points"]) * (float(p["seconds"]) + float(p.get("warmup_s", 0.0)) + 0.05)


def nofile_needed(p: dict[str, Any]) -> int:
    """Descriptors a process needs to hold M1's connections (with room for its own files)."""
    return int(p["conns"]) + int(p["warmup_conns"]) + 256


def nofile_problem(p: dict[str, Any]) -> Optional[str]:
    """Why this machine cannot measure M1 (no /proc, or a hard RLIMIT_NOFILE too low), or None."""
    if not os.path.exists(f"/proc/{os.getpid()}/status"):
        return "it reads the server's VmRSS and descriptors from /proc, which this system does not have"
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    need = nofile_needed(p)
    if hard != resource.RLIM_INFINITY and hard < need:
        return (f"the hard RLIMIT_NOFILE is {hard}, and {p['conns']:,} connections need {need} descriptors "
                "in each of server and client (raise it: ulimit -Hn, or limits.conf)")
    return None


def _env(impl: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if IMPLS[impl].pure:
        env["FASTSOCK_PURE"] = "1"
    else:
        env.pop("FASTSOCK_PURE", None)
    return env


def server_argv(case: Case, impl: str, p: dict[str, Any], limit: int, cref: creference.CReference) -> list[str]:
    w = case.workload
    if impl == "c":
        binary = cref.binary(WORKLOADS[w].program)
        assert binary is not None
        args = {"W1": [p.get("bytes")], "W2": [], "W3": [p.get("frames"), p.get("payload")], "W4": [], "W5": [],
                "M1": []}[w]
        return [binary, "server", *map(str, args), str(limit)]
    return [sys.executable, "-m", "fastsock._bench.server", "run", w, impl, json.dumps(p), str(limit)]


def client_argv(case: Case, p: dict[str, Any], port: int, server_pid: int, limit: int,
                cref: creference.CReference, use_c: bool) -> list[str]:
    w = case.workload
    if w == "W1":
        args = [port, p["bytes"]]
    elif w == "W2":
        args = [port, p["round_trips"], p["warmup"], p["payload"]]
    elif w == "W3":
        args = [port, p["frames"], p["payload"]]
    elif w == "W4":
        args = [port, server_pid, ",".join(map(str, p["points"])), p["seconds"], p["msg_size"]]
    elif w == "W5":
        args = [port, server_pid, ",".join(map(str, p["points"])), p["seconds"], p["warmup_s"], p["depth"],
                p["payload"]]
    else:  # M1: a Python client always (it measures memory, not speed)
        args = [port, server_pid, p["conns"], p["warmup_conns"]]
        use_c = False
    if use_c:
        binary = cref.binary(w)
        assert binary is not None
        prefix = [binary]
    else:
        prefix = [sys.executable, "-m", "fastsock._bench.pyclient", w.lower()]
    return [*prefix, "client", *map(str, args), str(limit)]


def _status_text(status: Optional[int]) -> str:
    if status is None:
        return "still running"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


def _json_line(line: str) -> dict[str, Any]:
    return json.loads(line.split(" ", 1)[1])  # type: ignore[no-any-return]


def measurements(case: Case, server: dict[str, Any], client: dict[str, Any]) -> list[dict[str, Any]]:
    """The figures of one run: one measurement (W1-W3, M1) or one per connection count (W4, W5)."""
    wl = WORKLOADS[case.workload]
    if wl.kind == "points":
        out = []
        for pt in client["points"]:
            secs = pt["seconds"] or 1e-9
            out.append({
                "point": pt["conns"], "ops": pt["ops"], "seconds": secs,
                "value": pt["ops"] / secs * wl.metric_scale,
                "server_cpu": pt["server_cpu"], "client_cpu": pt["cpu"],
                "server_cpu_per_op": pt["server_cpu"] / pt["ops"] if pt["ops"] and pt["server_cpu"] >= 0 else None,
                "server_cpu_pct": 100 * pt["server_cpu"] / secs if pt["server_cpu"] >= 0 else None,
                "client_cpu_pct": 100 * pt["cpu"] / secs,
                "p50_us": pt["p50_us"], "p99_us": pt["p99_us"],
                **({"checked": pt["checked"]} if "checked" in pt else {}),
            })
        return out
    if wl.kind == "memory":  # the server's VmRSS growth per connection, in KiB
        conns, secs = client["conns"], client["seconds"] or 1e-9
        return [{
            "point": None, "ops": conns, "seconds": secs,
            "value": (client["rss_after_kib"] - client["rss_before_kib"]) / conns,
            "used_value": (client["rss_used_kib"] - client["rss_before_kib"]) / conns,
            "server_cpu": client["server_cpu"], "client_cpu": client["cpu"],
            "server_cpu_per_op": client["server_cpu"] / conns if client["server_cpu"] >= 0 else None,
            "server_cpu_pct": 100 * client["server_cpu"] / secs if client["server_cpu"] >= 0 else None,
            "client_cpu_pct": 100 * client["cpu"] / secs,
            "rss_before_kib": client["rss_before_kib"], "rss_after_kib": client["rss_after_kib"],
            "rss_used_kib": client["rss_used_kib"], "client": client,
        }]
    if case.workload == "W2":  # the client times the round trips; the server counts warm-up too
        ops, secs = client["ops"], client["seconds"] or 1e-9
    else:
        ops, secs = server["ops"], server["seconds"] or 1e-9
    m = {
        "point": None, "ops": ops, "seconds": secs, "value": ops / secs * wl.metric_scale,
        "server_cpu": server["cpu"], "client_cpu": client["cpu"],
        "server_cpu_per_op": server["cpu"] / server["ops"] if server["ops"] else None,
        "server_cpu_pct": 100 * server["cpu"] / (server["seconds"] or 1e-9),
        "client_cpu_pct": 100 * client["cpu"] / (client["seconds"] or 1e-9),
        "server": server, "client": client,
    }
    if "p50_us" in client:
        m["p50_us"], m["p99_us"] = client["p50_us"], client["p99_us"]
    return [m]


def run_once(case: Case, impl: str, p: dict[str, Any], cref: creference.CReference, use_c_client: bool,
             cores: tuple[Optional[int], Optional[int]]) -> list[dict[str, Any]]:
    """One repetition; raises RunFailed or Unavailable. Leaves no process behind."""
    wl = WORKLOADS[case.workload]
    if wl.kind == "tool":
        from . import toolrun

        return toolrun.run_once(case, impl, p, _env(impl), cores)
    limit = wl.limit_s
    persistent = wl.kind != "single"  # the server serves until it is stopped; the client measures
    nofile = nofile_needed(p) if wl.kind == "memory" else None
    server = client = None
    try:
        server = procs.Child(f"{impl} server", server_argv(case, impl, p, limit, cref), env=_env(impl), core=cores[0],
                             nofile=nofile)
        line = server.expect(("PORT ", "UNAVAILABLE"), time.monotonic() + 30)
        if line is None:
            status = server.wait(time.monotonic() + 1)
            raise RunFailed(f"server did not start ({_status_text(status)}): {server.stderr_tail()}")
        if line.startswith("UNAVAILABLE"):
            raise Unavailable(line.partition(" ")[2] or "unavailable")
        port = int(line.split()[1])
        deadline = time.monotonic() + limit + 5
        client = procs.Child("client", client_argv(case, p, port, server.pid, limit, cref, use_c_client),
                             env=_env("stdlib-best"), core=cores[1])
        cline = client.expect(("RESULT ",), deadline)
        cstatus = client.wait(time.monotonic() + 5)
        if cline is None or cstatus != 0:
            sstatus = server.proc.poll()
            if sstatus is not None and sstatus != 0:
                raise RunFailed(f"server crashed ({_status_text(sstatus)}) {server.stderr_tail()}".strip())
            raise RunFailed(f"load generator failed ({_status_text(cstatus)}): {client.stderr_tail()}")
        cres = _json_line(cline)
        if persistent:
            if not server.running():
                raise RunFailed(f"server exited during the run ({_status_text(server.proc.poll())})")
            sres: dict[str, Any] = {}
        else:
            sline = server.expect(("RESULT ",), time.monotonic() + 15)
            sstatus = server.wait(time.monotonic() + 5)
            if sline is None:
                raise RunFailed(f"server gave no result ({_status_text(sstatus)}): {server.stderr_tail()}")
            sres = _json_line(sline)
            if not sres.get("ok", True) or not cres.get("ok", True):
                raise RunFailed(f"totals do not match: server {sres}, client {cres}")
        return measurements(case, sres, cres)
    finally:
        if client is not None:
            client.kill()
        if server is not None:
            if persistent:  # these servers serve until stopped
                server.terminate(grace=0.5)
            else:
                server.kill()


def placement_cores(placement: str) -> tuple[Optional[int], Optional[int]]:
    """(server core, client core): different cores for "split", one core for "same"."""
    try:
        usable = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux: no pinning
        return (None, None)
    if placement == "same" or len(usable) < 2:
        return (usable[0], usable[0])
    return (usable[0], usable[1])


def probe_python(pure: bool) -> dict[str, dict[str, Optional[str]]]:
    """Which Python servers are available (asks a child, with or without FASTSOCK_PURE)."""
    child = procs.Child("probe", [sys.executable, "-m", "fastsock._bench.server", "probe"],
                        env=_env("fastsock-pure" if pure else "stdlib-best"))
    try:
        line = child.read_line(time.monotonic() + 60)
        status = child.wait(time.monotonic() + 10)
        if line is None or status != 0:
            raise RuntimeError(f"probing the implementations failed: {child.stderr_tail()}")
        return json.loads(line)  # type: ignore[no-any-return]
    finally:
        child.kill()


@dataclass
class Plan:
    """Every run to do, in order, with the rows they fill."""

    cases: list[Case]
    params: dict[str, dict[str, Any]]
    rows: dict[tuple[str, str], Row]
    tasks: list[tuple[Case, str, int]]
    estimates: list[float]
    notes: list[str]
    use_c_client: bool


def make_plan(opts: Options, cref: creference.CReference) -> Plan:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    notes: list[str] = []
    if usable < 2:
        notes.append("only 1 usable core: server and client share it in every workload")
    if cref.note:
        notes.append(cref.note)
    use_c = opts.client == "c" or (opts.client == "auto" and len(cref.binaries) == len(creference.PROGRAMS))
    if opts.client == "c" and not cref.binaries:
        raise SystemExit("--client c: no compiled C reference (" + (cref.note or "unknown reason") + ")")
    if not use_c:
        notes.append("load generator: the Python client (no C compiler); figures may be limited by the client")
    probes = {False: probe_python(False)}
    if opts.impls is None or any(IMPLS[i].pure for i in opts.impls):
        probes[True] = probe_python(True)
    plan = Plan(cases(opts, usable), {}, {}, [], [], notes, use_c)
    for case in plan.cases:
        wl = WORKLOADS[case.workload]
        p = params_for(wl, opts)
        if case.variant:
            p["variant"] = case.variant
        plan.params[case.key] = p
        runnable = []
        if wl.kind == "memory":
            cannot = nofile_problem(p)
        elif wl.kind == "tool":  # without its load generator, no row of the table can run
            cannot = tools.missing_client(case.variant)
        else:
            cannot = None
        if cannot:
            notes.append(f"{case.table} skipped: {cannot}")
        for impl in wl.impls:
            if opts.impls is not None and impl not in opts.impls:
                continue
            row = Row(case.key, impl)
            plan.rows[(case.key, impl)] = row
            if cannot:
                row.status, row.reason = "skipped", cannot
                continue
            if impl == "c" and wl.kind == "tool":
                reason = tools.missing_server(case.variant)
                if reason:
                    row.status, row.reason = "skipped", reason
                    continue
            elif impl == "c":
                if cref.binary(wl.program) is None:
                    row.status, row.reason = "skipped", cref.note or "C reference not compiled"
                    continue
            else:
                probe = probes.get(IMPLS[impl].pure, probes[False])
                reason = probe.get(case.table, {}).get(impl)
                if reason:
                    row.status, row.reason = "unavailable", reason
                    continue
            runnable.append(impl)
        # Repetition-major order: a burst of background load on a shared machine hits one
        # repetition of several implementations, which the medians filter out, rather than
        # every repetition of one implementation.
        repeat = min(opts.repeat, wl.quick_repeat) if opts.quick and wl.quick_repeat else opts.repeat
        for rep in range(repeat):
            for impl in runnable:
                plan.tasks.append((case, impl, rep))
                plan.estimates.append(estimate_seconds(case, impl, p))
    return plan


def execute(plan: Plan, opts: Options, cref: creference.CReference,
            on_progress: Callable[[int, tuple[Case, str, int], Optional[str]], None]) -> None:
    """Run every task of `plan`, filling its rows. Ctrl-C propagates after cleanup."""
    for i, (case, impl, rep) in enumerate(plan.tasks):
        row = plan.rows[(case.key, impl)]
        if row.status == "unavailable":
            on_progress(i, (case, impl, rep), None)
            continue
        on_progress(i, (case, impl, rep), "start")
        try:
            row.runs.append({"repeat": rep, "measurements": run_once(
                case, impl, plan.params[case.key], cref, plan.use_c_client, placement_cores(case.placement))})
        except Unavailable as exc:
            row.status, row.reason = "unavailable", str(exc)
        except RunFailed as exc:
            row.failures.append(str(exc))
        except (OSError, ValueError, KeyError) as exc:  # a broken child output must not stop the run
            row.failures.append(f"{type(exc).__name__}: {exc}")
        on_progress(i, (case, impl, rep), "done")
    for row in plan.rows.values():
        if row.status == "pending":
            if row.runs:
                row.status = "ok"
                if row.failures:
                    runs = len(row.failures) + len(row.runs)
                    row.reason = f"{len(row.failures)} of {runs} runs failed: {row.failures[0]}"
            else:
                row.status = "failed"
                row.reason = row.failures[0] if row.failures else "not run"
