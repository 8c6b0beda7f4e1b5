"""The runner's report: medians, min-max, ratios to stdlib best and to C, tables, progress lines."""

from __future__ import annotations

import io
from typing import Any, Optional

from fastsock._bench import report
from fastsock._bench.progress import Progress
from fastsock._bench.runner import Case, Options, Plan, Row, params_for
from fastsock._bench.spec import WORKLOADS


def _m(value: float, point: Optional[int] = None, cpu_per_op: float = 1e-6) -> dict[str, Any]:
    return {"point": point, "ops": 1000, "seconds": 1.0, "value": value, "server_cpu": 0.5, "client_cpu": 0.2,
            "server_cpu_per_op": cpu_per_op, "server_cpu_pct": 50.0, "client_cpu_pct": 20.0,
            "p50_us": 10.0, "p99_us": 20.0}


def _plan(workload: str, values: dict[str, list[float]], point: Optional[int] = None) -> Plan:
    case = Case(workload, "split")
    rows = {}
    for impl, vals in values.items():
        row = Row(case.key, impl, status="ok")
        row.runs = [{"repeat": i, "measurements": [_m(v, point)]} for i, v in enumerate(vals)]
        rows[(case.key, impl)] = row
    gone = Row(case.key, "uvloop-streams", status="unavailable", reason="uvloop not installed")
    rows[(case.key, "uvloop-streams")] = gone
    return Plan([case], {case.key: {}}, rows, [], [], [], True)


def test_medians_ranges_and_ratios() -> None:
    plan = _plan("W2", {"c": [100.0, 120.0, 110.0], "stdlib-best": [50.0, 60.0, 55.0], "fastsock": [80.0, 90.0, 88.0]})
    table = report.summarize(plan)["W2"][None]
    assert table["c"]["median"] == 110.0 and table["c"]["min"] == 100.0 and table["c"]["max"] == 120.0
    assert table["fastsock"]["vs_c"] == 88.0 / 110.0
    assert table["fastsock"]["vs_stdlib_best"] == 88.0 / 55.0
    assert table["stdlib-best"]["vs_stdlib_best"] == 1.0
    assert table["fastsock"]["server_cpu_per_op"] == 1.0  # µs per round trip
    assert table["fastsock"]["cpu_vs_c"] == 1.0
    assert "uvloop-streams" not in table


def test_ratios_absent_without_the_references() -> None:
    table = report.summarize(_plan("W3", {"fastsock": [1e6]}))["W3"][None]
    assert table["fastsock"]["vs_c"] is None and table["fastsock"]["vs_stdlib_best"] is None


def test_text_and_markdown_tables_show_rows_and_statuses() -> None:
    plan = _plan("W1", {"c": [2.0], "stdlib-best": [1.0], "fastsock": [1.5]})
    machine = {"date": "today", "cpu": "cpu", "cores": 2, "usable_cores": 2, "kernel": "Linux", "python": "CPython",
               "compiler": None, "libraries": {"fastsock": "0.1.0"}}
    text = report.render_text(plan, machine, "fastsock bench")
    assert "W1 bulk" in text and "fastsock (C backend)" in text and "1.50x" in text and "75%" in text
    assert "unavailable: uvloop not installed" in text
    md = report.render_markdown(plan, machine, "fastsock bench")
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len({ln.count("|") for ln in lines}) == 1  # every row has the header's columns


def test_w4_rows_per_connection_count() -> None:
    plan = _plan("W4", {"c": [10.0], "stdlib-best": [5.0]}, point=100)
    head, body = report.table_rows(plan, report.summarize(plan), plan.cases[0])
    assert head[0] == "conns"
    assert [cells[0] for cells in body if isinstance(cells, list)] == ["100", "100"]


def test_quick_counts_follow_workloads_md_and_scale_shrinks_them() -> None:
    quick = params_for(WORKLOADS["W1"], Options(["W1"], quick=True))
    assert quick["bytes"] == 256 * 1024 * 1024
    assert params_for(WORKLOADS["W3"], Options(["W3"], quick=True))["frames"] == 200_000
    full = params_for(WORKLOADS["W2"], Options(["W2"]))
    assert (full["round_trips"], full["warmup"], full["payload"]) == (50_000, 1_000, 64)
    tiny = params_for(WORKLOADS["W1"], Options(["W1"], quick=True, scale=0.0001))
    assert tiny["bytes"] % (256 * 1024) == 0 and tiny["bytes"] >= 256 * 1024


def test_progress_writes_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    p = Progress(out, [1.0, 1.0], repeat=2)
    case = Case("W2", "same")
    p.update(0, (case, "stdlib-best", 0), "start")
    p.update(0, (case, "stdlib-best", 0), "done")
    p.tick()
    p.finish()
    assert out.getvalue().count("\n") == 1
    assert "[1/2] W2 same-core stdlib best #1/2" in out.getvalue() and "left" in out.getvalue()


def test_w5_table_per_connection_count_with_latency_and_cpu() -> None:
    plan = _plan("W5", {"c": [1e6], "stdlib-best": [4e5], "uvloop-protocol": [5e5]}, point=10)
    head, body = report.table_rows(plan, report.summarize(plan), plan.cases[0])
    assert head[0] == "conns" and "p99 µs" in head and "server CPU µs/req" in head
    assert "vs stdlib best" in head and "vs C" in head
    rows = [cells for cells in body if isinstance(cells, list)]
    assert [cells[0] for cells in rows] == ["10", "10", "10"]
    assert "stdlib selectors + bytearray (best)" in [cells[1] for cells in rows]
    assert "2.50x" in rows[0]  # C: 1e6 / 4e5 of stdlib best


def _memory_plan(kib: dict[str, list[float]]) -> Plan:
    case = Case("M1", "split")
    rows = {}
    for impl, vals in kib.items():
        row = Row(case.key, impl, status="ok")
        row.runs = [{"repeat": i, "measurements": [
            {"point": None, "ops": 10_000, "seconds": 1.0, "value": v, "server_cpu": 0.1, "client_cpu": 0.5,
             "server_cpu_per_op": 1e-5, "server_cpu_pct": 10.0, "client_cpu_pct": 50.0,
             "used_value": v + 0.5, "rss_before_kib": 20_480, "rss_after_kib": 20_480 + v * 10_000,
             "rss_used_kib": 20_480 + (v + 0.5) * 10_000}]} for i, v in enumerate(vals)]
        rows[(case.key, impl)] = row
    rows[(case.key, "fastsock-server")] = Row(case.key, "fastsock-server", status="unavailable",
                                              reason="fastsock.Server is not built yet")
    return Plan([case], {case.key: {}}, rows, [], [], [], True)


def test_m1_table_shows_kib_per_connection_rss_and_unavailable_rows() -> None:
    plan = _memory_plan({"c": [0.0], "stdlib-best": [0.25, 0.2, 0.3], "asyncio-protocol": [1.7]})
    summary = report.summarize(plan)
    table = summary["M1"][None]
    assert table["stdlib-best"]["median"] == 0.25 and table["asyncio-protocol"]["vs_stdlib_best"] == 1.7 / 0.25
    head, body = report.table_rows(plan, summary, plan.cases[0])
    assert head[:2] == ["implementation", "KiB/conn (median)"] and "RSS after MiB" in head
    rows = {cells[0]: cells for cells in body if isinstance(cells, list)}
    assert rows["stdlib selectors"][1] == "0.25" and rows["stdlib selectors"][7] == "10,000"
    assert rows["stdlib selectors"][4] == "0.75"  # after one request each
    assert rows["stdlib selectors"][5] == "20.0"  # MiB before
    statuses = [cells for cells in body if isinstance(cells, report.StatusRow)]
    assert statuses and "fastsock.Server is not built yet" in statuses[0].status
    text = report.summary_paragraph(plan, summary)
    assert "KiB per connection" in text and "asyncio Protocol 1.70 (2.20 after one request)" in text
    assert "load generator" not in text  # M1's client CPU is no limit, and says nothing about one


def test_server_targets_are_reported_met_or_not_when_measured() -> None:
    plan = _plan("W5", {"c": [1e6], "fastsock-server": [8e5], "uvloop-protocol": [5e5]}, point=100)
    for impl, cpu in (("c", 1e-6), ("fastsock-server", 1.4e-6), ("uvloop-protocol", 3e-6)):
        for run in plan.rows[("W5", impl)].runs:
            run["measurements"][0]["server_cpu_per_op"] = cpu
    targets = report.target_sentences(plan, report.summarize(plan))
    assert any("CPU/req vs C 1.40x (target ≤ 1.5x: met)" in t for t in targets), targets
    assert any("CPU/req vs uvloop Protocol 0.47x (target ≤ 0.5x: met)" in t for t in targets), targets
    for run in plan.rows[("W5", "fastsock-server")].runs:
        run["measurements"][0]["server_cpu_per_op"] = 2e-6
    machine = {"date": "today", "cpu": "cpu", "cores": 2, "usable_cores": 2, "kernel": "Linux", "python": "CPython",
               "compiler": None, "libraries": {"fastsock": "0.1.0"}}
    text = report.render_text(plan, machine, "fastsock bench")
    assert "Server targets (issues 10, 11):" in text and "CPU/req vs C 2.00x (target ≤ 1.5x: NOT met)" in text
    assert "Server targets (issues 10, 11):" in report.render_markdown(plan, machine, "fastsock bench")
    # without the Server's figures there is no target line
    plain = _plan("W5", {"c": [1e6], "stdlib-best": [4e5]}, point=100)
    assert report.target_sentences(plain, report.summarize(plain)) == []


def test_w5_and_m1_quick_counts() -> None:
    w5 = params_for(WORKLOADS["W5"], Options(["W5"], quick=True))
    assert w5["points"] == (10, 100) and w5["depth"] == 16 and w5["payload"] == 64
    full = params_for(WORKLOADS["W5"], Options(["W5"]))
    assert (full["seconds"], full["warmup_s"]) == (5.0, 1.0)  # WORKLOADS.md: 5 s after 1 s warm-up
    assert params_for(WORKLOADS["M1"], Options(["M1"]))["conns"] == 10_000
    tiny = params_for(WORKLOADS["W5"], Options(["W5"], quick=True, scale=0.01))
    assert 0 < tiny["warmup_s"] < 1 and tiny["seconds"] >= 0.2  # seconds, not a count
