"""Tables, the summary paragraph, JSON and Markdown output of a finished (or interrupted) run."""

from __future__ import annotations

import json
import statistics
from typing import Any, Optional

from .runner import Case, Plan, Row
from .spec import BASELINE, GROUPS, REFERENCE, TARGETS, WORKLOADS, label

SCHEMA = "fastsock-bench/1"


def _points(rows: list[Row]) -> list[Optional[int]]:
    pts: list[Optional[int]] = []
    for row in rows:
        for run in row.runs:
            for m in run["measurements"]:
                if m["point"] not in pts:
                    pts.append(m["point"])
    return sorted(pts, key=lambda x: -1 if x is None else x) or [None]


def _median(values: list[float]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def stats(row: Row, point: Optional[int], case: Case) -> Optional[dict[str, Any]]:
    """Median, min and max of the headline figure and medians of the others, at one point."""
    wl = WORKLOADS[case.workload]
    ms = [m for run in row.runs for m in run["measurements"] if m["point"] == point]
    if not ms:
        return None
    values = [m["value"] for m in ms]
    per_op = _median([m["server_cpu_per_op"] for m in ms])
    out = {
        "n": len(values), "median": statistics.median(values), "min": min(values), "max": max(values),
        "server_cpu_per_op": per_op * wl.cpu_scale if per_op is not None else None,
        "server_cpu_pct": _median([m["server_cpu_pct"] for m in ms]),
        "client_cpu_pct": _median([m["client_cpu_pct"] for m in ms]),
        "p50_us": _median([m.get("p50_us") for m in ms]),
        "p99_us": _median([m.get("p99_us") for m in ms]),
    }
    if wl.kind == "memory":
        for key in ("rss_before_kib", "rss_after_kib", "rss_used_kib", "ops"):
            out[key] = _median([m.get(key) for m in ms])
        out["used_median"] = _median([m.get("used_value") for m in ms])
    return out


def summarize(plan: Plan) -> dict[str, dict[Optional[int], dict[str, dict[str, Any]]]]:
    """{case key: {point: {impl: stats + ratios}}}."""
    out: dict[str, dict[Optional[int], dict[str, dict[str, Any]]]] = {}
    for case in plan.cases:
        rows = [r for (ck, _), r in plan.rows.items() if ck == case.key]
        per_point: dict[Optional[int], dict[str, dict[str, Any]]] = {}
        for point in _points(rows):
            table: dict[str, dict[str, Any]] = {}
            for row in rows:
                s = stats(row, point, case)
                if s is not None:
                    table[row.impl] = s
            for s in table.values():
                for name, ref in (("vs_stdlib_best", BASELINE), ("vs_c", REFERENCE)):
                    base = table.get(ref)
                    s[name] = s["median"] / base["median"] if base and base["median"] else None
                c_cpu = table.get(REFERENCE, {}).get("server_cpu_per_op")
                mine = s["server_cpu_per_op"]
                s["cpu_vs_c"] = mine / c_cpu if c_cpu and mine is not None else None
            per_point[point] = table
        out[case.key] = per_point
    return out


def fmt_value(v: Optional[float], unit: str) -> str:
    if v is None:
        return "-"
    if unit in ("GB/s", "KiB/conn"):
        return f"{v:.2f}"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def fmt_num(v: Optional[float], digits: int = 1) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}f}"


def fmt_ratio(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}x"


class StatusRow:
    """A row without figures: the leading cells, then its status and reason across the table."""

    def __init__(self, lead: list[str], status: str) -> None:
        self.lead, self.status = lead, status


Body = list["list[str] | StatusRow"]


def table_rows(plan: Plan, summary: dict[str, Any], case: Case) -> tuple[list[str], Body]:
    """Header and rows of one case's table (rows without figures carry their status)."""
    wl = WORKLOADS[case.workload]
    if wl.kind == "memory":
        return memory_rows(plan, summary, case)
    latency = case.workload == "W2" or wl.kind in ("points", "tool")
    head = ["implementation", f"{wl.metric} (median)", "min-max", "vs stdlib best", "vs C",
            f"server CPU {wl.cpu_unit}", "CPU/op vs C", "server CPU %", "client CPU %"]
    if latency:
        head[5:5] = ["p50 µs", "p99 µs"]
    if wl.kind == "points":
        head.insert(0, "conns")
    body: Body = []
    rows = [r for (ck, _), r in plan.rows.items() if ck == case.key]
    first = True
    for point, table in summary[case.key].items():
        for row in rows:
            name = label(case.key, row.impl)
            s = table.get(row.impl)
            lead = [str(point)] if wl.kind == "points" else []
            if s is None:
                if first:  # report a row without figures once
                    body.append(StatusRow([*lead, name], f"{row.status}: {row.reason}"[:160]))
                continue
            if row.failures:
                name += f" ({len(row.failures)} failed)"
            spread = f"{fmt_value(s['min'], wl.metric)}-{fmt_value(s['max'], wl.metric)}"
            cells = [*lead, name, fmt_value(s["median"], wl.metric), spread,
                     fmt_ratio(s["vs_stdlib_best"]), fmt_ratio(s["vs_c"])]
            if latency:
                cells += [fmt_num(s["p50_us"]), fmt_num(s["p99_us"])]
            cells += [fmt_num(s["server_cpu_per_op"], 2), fmt_ratio(s["cpu_vs_c"]), fmt_num(s["server_cpu_pct"], 0),
                      fmt_num(s["client_cpu_pct"], 0)]
            body.append(cells)
        first = False
    return head, body


def memory_rows(plan: Plan, summary: dict[str, Any], case: Case) -> tuple[list[str], Body]:
    """M1's table: the server's RSS growth per idle connection (lower is better)."""
    wl = WORKLOADS[case.workload]
    head = ["implementation", f"{wl.metric} (median)", "min-max", "vs stdlib", f"after 1 request {wl.metric}",
            "RSS before MiB", "RSS after MiB", "connections", f"server CPU {wl.cpu_unit}"]
    body: Body = []
    table = summary[case.key].get(None, {})
    for (ck, _), row in plan.rows.items():
        if ck != case.key:
            continue
        name = label(case.key, row.impl)
        s = table.get(row.impl)
        if s is None:
            body.append(StatusRow([name], f"{row.status}: {row.reason}"[:160]))
            continue
        if row.failures:
            name += f" ({len(row.failures)} failed)"
        mib = [None if s.get(k) is None else s[k] / 1024 for k in ("rss_before_kib", "rss_after_kib")]
        body.append([name, fmt_value(s["median"], wl.metric),
                     f"{fmt_value(s['min'], wl.metric)}-{fmt_value(s['max'], wl.metric)}",
                     fmt_ratio(s["vs_stdlib_best"]), fmt_value(s.get("used_median"), wl.metric),
                     fmt_num(mib[0]), fmt_num(mib[1]),
                     "-" if s.get("ops") is None else f"{s['ops']:,.0f}", fmt_num(s["server_cpu_per_op"], 2)])
    return head, body


def text_table(head: list[str], body: Body) -> str:
    """Aligned plain-text table: names left-aligned, figures right-aligned."""
    name_col = 1 if head[0] == "conns" else 0
    widths = [len(h) for h in head]
    for cells in body:
        for i, c in enumerate(cells.lead if isinstance(cells, StatusRow) else cells):
            widths[i] = max(widths[i], len(c))

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == name_col else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [line(head), "  ".join("-" * w for w in widths)]
    for cells in body:
        if isinstance(cells, StatusRow):
            lines.append(line(cells.lead) + "  " + cells.status)
        else:
            lines.append(line(cells))
    return "\n".join(lines)


def markdown_table(head: list[str], body: Body) -> str:
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join(":---" if i <= (1 if head[0] == "conns" else 0) else "---:" for i in range(len(head))) + "|"]
    for cells in body:
        if isinstance(cells, StatusRow):
            cells = cells.lead + [cells.status] + [""] * (len(head) - len(cells.lead) - 1)
        out.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(out)


def _headline(plan: Plan, summary: dict[str, Any]) -> list[tuple[str, dict[str, dict[str, Any]], Case]]:
    """(name, table, case) per case, W4 at its largest connection count."""
    out = []
    for case in plan.cases:
        table = summary[case.key]
        point = max((p for p in table if p is not None), default=None)
        name = case.key.replace("-same-core", " same-core") + (f" ({point} conns)" if point is not None else "")
        out.append((name, table.get(point, {}), case))
    return out


def _vs(s: dict[str, Any]) -> str:
    bits = []
    if s.get("vs_stdlib_best") is not None:
        bits.append(f"{s['vs_stdlib_best']:.2f}x stdlib best")
    if s.get("vs_c") is not None:
        bits.append(f"{s['vs_c']:.0%} of C")
    if s.get("cpu_vs_c") is not None:
        bits.append(f"CPU/op {s['cpu_vs_c']:.1f}x C")
    return ", ".join(bits) or "no ratio"


def _memory_sentence(plan: Plan, summary: dict[str, Any]) -> list[str]:
    out = []
    for case in plan.cases:
        wl = WORKLOADS[case.workload]
        table = summary[case.key].get(None, {})
        if wl.kind != "memory" or not table:
            continue
        conns = max((s.get("ops") or 0) for s in table.values())
        parts = [f"{label(case.key, i)} {s['median']:.2f}"
                 + (f" ({s['used_median']:.2f} after one request)" if s.get("used_median") is not None else "")
                 for i, s in sorted(table.items(), key=lambda kv: kv[1]["median"])]
        out.append(f"{wl.key} {wl.name} ({conns:,.0f}), server RSS growth in KiB per connection: " + ", ".join(parts))
    return out


def _ratio_of(table: dict[str, dict[str, Any]], impl: str, other: Optional[str], what: str) -> Optional[float]:
    mine = table.get(impl, {}).get(what)
    if other is None:
        return mine
    base = table.get(other, {}).get(what)
    return mine / base if mine is not None and base else None


def target_sentences(plan: Plan, summary: dict[str, Any], group: Optional[str] = None) -> list[str]:
    """Each target of spec.TARGETS (of `group` only, when given) whose figures were measured,
    with the figure and met / not met (a target without a bound: the ratio alone)."""
    out = []
    for t in TARGETS:
        if group is not None and t.group != group:
            continue
        for case in plan.cases:
            if case.workload != t.workload or case.variant != t.variant:
                continue
            if t.placement and case.placement != t.placement:
                continue
            for point, table in summary[case.key].items():
                if t.point is not None and point != t.point:
                    continue
                v = _ratio_of(table, t.impl, t.versus, t.figure)
                if v is None:
                    continue
                where = case.key.replace("-same-core", " same-core") + (f" at {point} conns" if point else "")
                unit = "" if t.versus is None else "x"
                text = f"{where} {label(case.key, t.impl)} {t.text}"
                if t.bound is None:
                    out.append(f"{text} {v:.2f}{unit}")
                    continue
                met = v >= t.bound if t.at_least else v < t.bound if t.strict else v <= t.bound
                shown = f"{v:.2f}" if round(v, 2) != t.bound else f"{v:.3f}"  # 1.004 is not "1.00: NOT met"
                sign = "≥" if t.at_least else "<" if t.strict else "≤"
                out.append(f"{text} {shown}{unit} (target {sign} {t.bound:g}{unit}: {'met' if met else 'NOT met'})")
    return out


def target_lines(plan: Plan, summary: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(title, sentences) per group of spec.GROUPS that has a measured target."""
    out = []
    for group, title in GROUPS.items():
        sentences = target_sentences(plan, summary, group)
        if sentences:
            out.append((title, sentences))
    return out


def summary_paragraph(plan: Plan, summary: dict[str, Any]) -> str:
    """One paragraph with the ratios that matter."""
    heads = [(n, t, c) for n, t, c in _headline(plan, summary) if WORKLOADS[c.workload].kind != "memory"]
    sentences = []
    for impl, who in (("fastsock", "fastsock (C backend)"), ("fastsock-pure", "The pure-Python backend"),
                      ("fastsock-server", "fastsock Server (C)"), ("fastsock-server-pure", "fastsock Server (python)")):
        parts = [f"{name} {_vs(t[impl])}" for name, t, _ in heads if impl in t]
        if parts:
            sentences.append(f"{who}: " + "; ".join(parts))
    sentences += _memory_sentence(plan, summary)
    fastest = []
    for name, t, case in heads:
        others = [(k, v) for k, v in t.items() if k != REFERENCE]
        if others:
            k, v = max(others, key=lambda kv: kv[1]["median"])
            fastest.append(f"{name} {label(case.key, k)}" + (f" ({v['vs_c']:.0%} of C)" if v.get("vs_c") else ""))
    if fastest:
        sentences.append("Fastest implementation (C reference aside): " + "; ".join(fastest))
    text = ". ".join(sentences) + "." if sentences else "No figures were measured."
    busy = []
    memory = {c.key for c in plan.cases if WORKLOADS[c.workload].kind == "memory"}
    for ck, per_point in summary.items():
        if ck in memory:  # M1's client is paced by the server's accepts: its CPU is no limit
            continue
        for point, table in per_point.items():
            for impl, s in table.items():
                if s.get("client_cpu_pct") and s["client_cpu_pct"] >= 90:
                    busy.append(f"{ck} {impl}" + (f"@{point}" if point else ""))
    if busy:
        text += (" The load generator used >= 90% of its core in " + ", ".join(busy[:6])
                 + (" ..." if len(busy) > 6 else "") + ": there the client, not the server, was the limit"
                 " (for the C rows: C's figure is a lower bound).")
    elif any(summary[c.key].get(p) for c in plan.cases if c.key not in memory for p in summary[c.key]):
        text += (" The load generator stayed below 90% of its core in every run, so it was not the limit"
                 " (when the server is not near 100% either, the kernel or wake-ups are).")
    reasons: dict[str, list[str]] = {}
    for r in plan.rows.values():
        if r.status in ("unavailable", "skipped", "failed") and r.reason not in reasons.setdefault(r.impl, []):
            reasons[r.impl].append(f"{r.status}: {r.reason}" if r.status == "failed" else r.reason)
    missing = [f"{impl} ({' / '.join(rs)})" for impl, rs in reasons.items() if rs]
    if missing:
        text += " Not measured: " + "; ".join(missing) + "."
    return text


def render_text(plan: Plan, machine: dict[str, Any], command: str) -> str:
    from .machine import one_line

    summary = summarize(plan)
    out = []
    for case in plan.cases:
        out.append(f"\n{case.title}")
        out.append(text_table(*table_rows(plan, summary, case)))
    out.append("\nSummary: " + summary_paragraph(plan, summary))
    for title, targets in target_lines(plan, summary):
        out.append(f"{title}: " + "; ".join(targets) + ".")
    for note in plan.notes:
        out.append(f"Note: {note}")
    out.append(f"Machine: {one_line(machine)}")
    out.append(f"Command: {command}")
    return "\n".join(out) + "\n"


def render_markdown(plan: Plan, machine: dict[str, Any], command: str) -> str:
    from .machine import one_line

    summary = summarize(plan)
    out = [f"Command: `{command}`  ", f"Date: {machine['date']}  ", f"Machine: {one_line(machine)}", ""]
    for case in plan.cases:
        out += [f"**{case.title}**", "", markdown_table(*table_rows(plan, summary, case)), ""]
    out.append(summary_paragraph(plan, summary))
    for title, targets in target_lines(plan, summary):
        out.append(f"\n{title}: " + "; ".join(targets) + ".")
    for note in plan.notes:
        out.append(f"\nNote: {note}")
    return "\n".join(out) + "\n"


def to_json(plan: Plan, machine: dict[str, Any], command: list[str], options: dict[str, Any],
            elapsed: float, interrupted: bool) -> dict[str, Any]:
    """Every raw figure, the summary, the machine and the versions."""
    summary = summarize(plan)
    return {
        "schema": SCHEMA,
        "command": command,
        "options": options,
        "machine": machine,
        "elapsed_s": round(elapsed, 3),
        "interrupted": interrupted,
        "notes": plan.notes,
        "targets": {group: target_sentences(plan, summary, group) for group in GROUPS},
        "load_generator": "c" if plan.use_c_client else "python",
        "cases": [{"key": c.key, "workload": c.workload, "variant": c.variant, "table": c.table,
                   "placement": c.placement, "title": c.title,
                   "metric": WORKLOADS[c.workload].metric, "cpu_unit": WORKLOADS[c.workload].cpu_unit,
                   "params": plan.params[c.key]} for c in plan.cases],
        "rows": [{"case": r.case, "impl": r.impl, "label": label(r.case, r.impl),
                  "status": r.status, "reason": r.reason, "failures": r.failures, "runs": r.runs,
                  "summary": [{"point": p, **s} for p, t in summary[r.case].items()
                              for i, s in t.items() if i == r.impl]}
                 for r in plan.rows.values()],
    }


def write_json(path: str, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, default=str)
        f.write("\n")


__all__ = ["render_text", "render_markdown", "to_json", "write_json", "summarize", "target_sentences", "target_lines",
           "SCHEMA"]
