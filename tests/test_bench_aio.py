"""The fastsock.aio rows of `fastsock bench` (issue 12): registration in W2-W5, the reasons they
are unavailable, and the issue's targets (computed from the medians of one run, reported met or
not on their own line).

In-process and fast: no child process, no socket. The rows themselves run in
test_bench_runner.py's smoke run of every workload (an available row must run and check its
totals there).
"""

from __future__ import annotations

import json
import types
from typing import Any, Optional

import pytest

from fastsock import cli
from fastsock._bench import creference, report, runner
from fastsock._bench.impls import aio, w1, w2, w3, w4, w5
from fastsock._bench.runner import Case, Plan, Row
from fastsock._bench.spec import AIO, GROUPS, IMPLS, TARGETS, WORKLOADS, label

MACHINE = {"date": "today", "cpu": "cpu", "cores": 2, "usable_cores": 2, "kernel": "Linux", "python": "CPython",
           "compiler": None, "libraries": {"fastsock": "0.1.0"}}


# ---------------------------------------------------------------- registration


def test_every_aio_row_is_registered_in_w2_to_w5_only() -> None:
    assert set(AIO) == set(aio.KEYS) == {"aio-stream", "aio-protocol", "aio-stream-uvloop", "aio-protocol-uvloop"}
    for key, mod in (("W2", w2), ("W3", w3), ("W4", w4), ("W5", w5)):
        assert set(AIO) <= set(WORKLOADS[key].impls), key
        for impl in AIO:  # a server per row, built by the aio module for this workload
            assert mod.SERVERS[impl].__qualname__.startswith(f"{key.lower()}_{aio.KEYS[impl][0]}."), (key, impl)
    for key in ("W1", "M1", "W6"):
        assert not set(AIO) & set(WORKLOADS[key].impls), key
    assert not set(AIO) & set(w1.SERVERS)


def test_aio_rows_are_labelled_by_api_and_loop() -> None:
    assert label("W3", "aio-stream-uvloop") == "fastsock.aio Stream on uvloop"
    assert label("W2-same-core", "aio-protocol-uvloop") == "fastsock.aio FramedProtocol on uvloop"
    assert label("W5", "aio-stream") == "fastsock.aio Stream on asyncio"
    assert label("W4", "aio-protocol") == "fastsock.aio FramedProtocol on asyncio"
    for impl in AIO:  # fastsock rows (the plot colours them), run on the active backend (not FASTSOCK_PURE)
        assert IMPLS[impl].fastsock and not IMPLS[impl].pure and not IMPLS[impl].reference


def test_the_command_line_takes_the_aio_rows_and_adds_the_references(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    opts = cli._parse_bench(parser, parser.parse_args(["bench", "-w", "W3", "-i", "aio-stream-uvloop"]))
    assert opts.workloads == ["W3"] and opts.impls == ["aio-stream-uvloop", "c", "stdlib-best"]
    assert cli.main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(f"{impl} ({label('W2', impl)})" in out for impl in AIO)


# ---------------------------------------------------------------- unavailable, with the reason


def test_without_fastsock_aio_every_row_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent() -> Any:
        raise ModuleNotFoundError("No module named 'fastsock.aio'")

    monkeypatch.setattr(aio, "aio_api", absent)
    for mod in (w2, w3, w4, w5):
        for impl in AIO:
            reason = mod.missing(impl)
            assert reason == "fastsock.aio is not in this fastsock build (ModuleNotFoundError: No module named " \
                             "'fastsock.aio')", reason
        assert mod.missing("stdlib-best") is None  # the other rows do not depend on it


def test_a_partial_fastsock_aio_names_what_it_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aio, "aio_api", lambda: types.SimpleNamespace(Stream=object))
    assert aio.missing("aio-protocol") == "fastsock.aio lacks FramedProtocol, start_server (not in this fastsock build)"


def test_the_uvloop_rows_need_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.SimpleNamespace(Stream=object, FramedProtocol=object, start_server=None)
    monkeypatch.setattr(aio, "aio_api", lambda: fake)
    monkeypatch.setattr(aio, "missing_fastsock", lambda *names: None)
    monkeypatch.setattr(aio, "loop_missing", lambda kind: "uvloop not installed (pip install uvloop)"
                        if kind == "uvloop" else None)
    assert aio.missing("aio-stream") is None and aio.missing("aio-protocol") is None
    assert aio.missing("aio-stream-uvloop") == aio.missing("aio-protocol-uvloop") == \
        "uvloop not installed (pip install uvloop)"


def test_unavailable_rows_are_planned_without_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    why = "fastsock.aio is not in this fastsock build (ModuleNotFoundError: No module named 'fastsock.aio')"
    monkeypatch.setattr(runner, "probe_python", lambda pure: {w: {i: why for i in AIO} for w in ("W2", "W3")})
    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    opts = runner.Options(["W2", "W3"], impls=["c", "stdlib-best", *AIO], quick=True, repeat=1)
    plan = runner.make_plan(opts, creference.CReference())
    assert [c.key for c in plan.cases] == ["W2", "W2-same-core", "W3"]
    for case in plan.cases:
        for impl in AIO:
            row = plan.rows[(case.key, impl)]
            assert (row.status, row.reason) == ("unavailable", why)
    assert not [t for t in plan.tasks if t[1] in AIO]
    assert f"aio-stream-uvloop ({why})" in report.summary_paragraph(plan, report.summarize(plan))


# ---------------------------------------------------------------- the targets


def _m(value: float, cpu_per_op: float, point: Optional[int]) -> dict[str, Any]:
    return {"point": point, "ops": 1000, "seconds": 1.0, "value": value, "server_cpu": 0.5, "client_cpu": 0.2,
            "server_cpu_per_op": cpu_per_op, "server_cpu_pct": 50.0, "client_cpu_pct": 20.0,
            "p50_us": 10.0, "p99_us": 20.0}


def _plan(cases: list[Case], figures: dict[str, list[tuple[float, float]]],
          points: tuple[Optional[int], ...] = (None,)) -> Plan:
    """Rows of `figures` {impl: [(value, cpu per op), ...] one per repetition} in every case."""
    rows = {}
    for case in cases:
        for impl, reps in figures.items():
            row = Row(case.key, impl, status="ok")
            row.runs = [{"repeat": i, "measurements": [_m(v, cpu, pt) for pt in points]}
                        for i, (v, cpu) in enumerate(reps)]
            rows[(case.key, impl)] = row
    return Plan(cases, {c.key: {} for c in cases}, rows, [], [], [], True)


def test_w3_targets_are_ratios_of_medians_within_the_run() -> None:
    plan = _plan([Case("W3", "split")], {
        "uvloop-streams": [(0.5e6, 0), (0.6e6, 0), (0.55e6, 0)],   # median 0.55M
        "uvloop-protocol": [(1.7e6, 0), (1.8e6, 0), (1.9e6, 0)],   # median 1.8M
        "aio-stream-uvloop": [(9e6, 0), (4e6, 0), (5.5e6, 0)],     # median 5.5M: the outlier does not count
    })
    got = report.target_sentences(plan, report.summarize(plan), "aio")
    assert got == [
        f"W3 fastsock.aio Stream on uvloop read_frames frames/s vs uvloop Protocol {5.5 / 1.8:.2f}x (target ≥ 3x: met)",
        f"W3 fastsock.aio Stream on uvloop read_frames frames/s vs uvloop streams {5.5 / 0.55:.2f}x (target ≥ 8x: met)",
    ]
    for run in plan.rows[("W3", "aio-stream-uvloop")].runs:
        run["measurements"][0]["value"] = 4.0e6
    got = report.target_sentences(plan, report.summarize(plan), "aio")
    assert got[0].endswith("2.22x (target ≥ 3x: NOT met)") and got[1].endswith("7.27x (target ≥ 8x: NOT met)")


def test_w5_targets_are_server_cpu_per_request_at_100_connections_only() -> None:
    plan = _plan([Case("W5", "split")], {
        "uvloop-protocol": [(5e5, 2.8e-6)], "uvloop-streams": [(2e5, 17e-6)],
        "aio-protocol-uvloop": [(6e5, 1.4e-6)], "aio-stream-uvloop": [(5e5, 6e-6)],
    }, points=(10, 100))
    got = report.target_sentences(plan, report.summarize(plan), "aio")
    assert got == [
        "W5 at 100 conns fastsock.aio FramedProtocol on uvloop CPU/req vs uvloop Protocol 0.50x (target ≤ 0.7x: met)",
        "W5 at 100 conns fastsock.aio Stream on uvloop CPU/req vs uvloop streams 0.35x (target ≤ 0.3x: NOT met)",
    ]


def test_w2_targets_use_the_same_core_table_only() -> None:
    plan = _plan([Case("W2", "split"), Case("W2", "same")], {
        "uvloop-streams": [(13e3, 30e-6)], "uvloop-protocol": [(45e3, 11.7e-6)],
        "aio-stream-uvloop": [(40e3, 12e-6)], "aio-protocol-uvloop": [(45e3, 11e-6)],
    })
    got = report.target_sentences(plan, report.summarize(plan), "aio")
    assert got == [
        "W2 same-core fastsock.aio Stream on uvloop round trips/s vs uvloop streams 3.08x (target ≥ 1x: met)",
        "W2 same-core fastsock.aio FramedProtocol on uvloop round trips/s vs uvloop Protocol 1.000x "
        "(target ≥ 1x: met)",  # equal medians meet "at least": three decimals show it is no rounding
    ]


def test_a_target_needs_both_rows_measured() -> None:
    plan = _plan([Case("W3", "split")], {"uvloop-protocol": [(1.8e6, 0)], "aio-stream-uvloop": [(6e6, 0)]})
    plan.rows[("W3", "uvloop-streams")] = Row("W3", "uvloop-streams", status="unavailable", reason="uvloop gone")
    got = report.target_sentences(plan, report.summarize(plan), "aio")
    assert len(got) == 1 and "vs uvloop Protocol 3.33x (target ≥ 3x: met)" in got[0]
    no_aio = _plan([Case("W3", "split")], {"uvloop-protocol": [(1.8e6, 0)], "uvloop-streams": [(0.5e6, 0)]})
    assert report.target_lines(no_aio, report.summarize(no_aio)) == []


def test_each_issue_12_target_is_in_the_aio_group() -> None:
    mine = [t for t in TARGETS if t.group == "aio"]
    assert {(t.workload, t.impl, t.versus, t.bound) for t in mine} == {
        ("W3", "aio-stream-uvloop", "uvloop-protocol", 3.0), ("W3", "aio-stream-uvloop", "uvloop-streams", 8.0),
        ("W5", "aio-protocol-uvloop", "uvloop-protocol", 0.7), ("W5", "aio-stream-uvloop", "uvloop-streams", 0.3),
        ("W2", "aio-stream-uvloop", "uvloop-streams", 1.0), ("W2", "aio-protocol-uvloop", "uvloop-protocol", 1.0),
    }
    assert all(t.group in GROUPS for t in TARGETS)
    for t in mine:
        assert t.impl in WORKLOADS[t.workload].impls and t.versus in WORKLOADS[t.workload].impls
        assert t.at_least == (t.figure == "median")  # throughput at least, CPU at most
        assert t.point == (100 if t.workload == "W5" else None)
        assert t.placement == ("same" if t.workload == "W2" else "")


def test_text_markdown_and_json_show_the_aio_targets_on_their_own_line() -> None:
    plan = _plan([Case("W5", "split")], {
        "c": [(1e6, 1e-6)], "fastsock-server": [(8e5, 1.4e-6)], "uvloop-protocol": [(5e5, 2.8e-6)],
        "aio-protocol-uvloop": [(6e5, 1.4e-6)],
    }, points=(100,))
    text = report.render_text(plan, MACHINE, "fastsock bench")
    lines = {ln.split(":")[0]: ln for ln in text.splitlines() if "targets (" in ln}
    assert set(lines) == {"Server targets (issues 10, 11)", "fastsock.aio targets (issue 12)"}
    assert "fastsock.aio" not in lines["Server targets (issues 10, 11)"]
    assert "FramedProtocol on uvloop CPU/req vs uvloop Protocol 0.50x (target ≤ 0.7x: met)" in \
        lines["fastsock.aio targets (issue 12)"]
    md = report.render_markdown(plan, MACHINE, "fastsock bench")
    assert "\nfastsock.aio targets (issue 12): W5 at 100 conns" in md
    data = json.loads(json.dumps(report.to_json(plan, MACHINE, ["fastsock", "bench"], {}, 1.0, False)))
    assert set(data["targets"]) == set(GROUPS)
    assert data["targets"]["aio"] == report.target_sentences(plan, report.summarize(plan), "aio")
    assert len(data["targets"]["server"]) == 2
