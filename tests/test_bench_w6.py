"""W6 in `fastsock bench`: redis-benchmark and wrk against the examples' protocol code on every
server, and against redis-server and nginx.

The parsers are tested on captured output; the plain-Python RESP parser of the hand-written
servers on byte strings; the plan with the tools hidden gives skipped rows with the reason;
one tiny run drives the real tools end to end (slow: about 15 s of child processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Optional

import pytest
from test_bench_runner import CWD, _env, probe, tagged_pids
from tools import needs, tool

from fastsock._bench import creference, runner, toolparse, tools
from fastsock._bench.impls import examples
from fastsock._bench.impls.respparse import ProtocolError, command, responder
from fastsock._bench.spec import IMPLS, WORKLOADS

REDIS7_CSV = '''\
"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"PING_INLINE","436681.22","1.582","0.296","1.455","2.687","3.183","5.711"
"PING_MBULK","529100.56","1.282","0.296","1.175","1.991","2.191","4.303"
"SET","380228.12","1.873","0.328","1.791","3.175","3.855","4.639"
"GET","418410.06","1.638","0.320","1.535","2.759","3.383","4.167"
'''

REDIS5_CSV = '''\
"PING_INLINE","100000.00"
"PING_BULK","125000.00"
"SET","80000.00"
"GET","100000.00"
'''

WRK_OK = '''\
Running 2s test @ http://127.0.0.1:18080/
  1 threads and 100 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.09ms    2.99ms  13.36ms   83.27%
    Req/Sec    35.00k     7.94k   46.27k    60.00%
  Latency Distribution
     50%    1.35ms
     75%    4.86ms
     90%    8.55ms
     99%   12.43ms
  70173 requests in 2.02s, 10.77MB read
Requests/sec:  34803.20
Transfer/sec:      5.34MB
'''

WRK_NON2XX = '''\
Running 1s test @ http://127.0.0.1:18181/nope
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     8.08ms    3.33ms  25.15ms   77.17%
    Req/Sec   729.60    129.31     0.93k    80.00%
  Latency Distribution
     50%    7.39ms
     75%    9.37ms
     90%   12.17ms
     99%   20.78ms
  727 requests in 1.00s, 369.54KB read
  Non-2xx or 3xx responses: 727
Requests/sec:    725.84
Transfer/sec:    368.95KB
'''

WRK_SOCKET_ERRORS = WRK_OK.replace("10.77MB read\n",
                                   "10.77MB read\n  Socket errors: connect 0, read 12, write 0, timeout 0\n")


# ---------------------------------------------------------------- redis-benchmark and wrk output


def test_redis_benchmark_csv_gives_every_test_and_the_totals() -> None:
    res = toolparse.redis_benchmark(REDIS7_CSV, "", 100_000)
    assert list(res["tests"]) == ["PING_INLINE", "PING_MBULK", "SET", "GET"]
    assert res["tests"]["SET"]["rps"] == 380228.12 and res["tests"]["GET"]["p99_ms"] == 3.383
    assert res["ops"] == 400_000
    seconds = sum(100_000 / r for r in (436681.22, 529100.56, 380228.12, 418410.06))
    assert res["seconds"] == pytest.approx(seconds) and res["rps"] == pytest.approx(400_000 / seconds)
    assert res["p50_us"] == pytest.approx(1791) and res["p99_us"] == pytest.approx(3855)  # the slowest test's


def test_redis_benchmark_csv_without_a_header_row() -> None:
    res = toolparse.redis_benchmark(REDIS5_CSV, "", 1000)
    assert res["ops"] == 4000 and res["tests"]["PING_BULK"]["rps"] == 125000.0
    assert res["p50_us"] is None and res["p99_us"] is None


@pytest.mark.parametrize("stdout, stderr, message", [
    (REDIS7_CSV.rsplit("\n", 3)[0] + "\n", "Error from server: ERR nope", "Error from server: ERR nope"),
    (REDIS7_CSV, "WARNING: Could not fetch server CONFIG", "Could not fetch server CONFIG"),
    ("", "Could not connect to Redis at 127.0.0.1:1: Connection refused", "Could not connect"),
    (REDIS7_CSV.rsplit("\n", 2)[0] + "\n", "", "reported 3 tests"),
    (REDIS7_CSV.replace('"GET","418410.06"', '"GET","0.00"'), "", "GET: 0.0 requests/s"),
    (REDIS7_CSV.replace('"SET","380228.12"', '"SET","fast"'), "", "unexpected redis-benchmark CSV row"),
])
def test_redis_benchmark_failures_are_reported(stdout: str, stderr: str, message: str) -> None:
    with pytest.raises(toolparse.BadOutput, match=message):
        toolparse.redis_benchmark(stdout, stderr, 1000)


def test_wrk_report_gives_requests_rate_and_latency() -> None:
    res = toolparse.wrk(WRK_OK)
    assert res == {"ops": 70173, "seconds": 2.02, "rps": 34803.2, "p50_us": pytest.approx(1350),
                   "p99_us": pytest.approx(12430)}


@pytest.mark.parametrize("stdout, message", [
    (WRK_NON2XX, "Non-2xx or 3xx responses: 727"),
    (WRK_SOCKET_ERRORS, "Socket errors: connect 0, read 12"),
    ("unable to connect to 127.0.0.1:18181 Connection refused", "no wrk summary"),
    (WRK_OK.replace("70173 requests", "0 requests"), "completed no request"),
])
def test_wrk_failures_are_reported(stdout: str, message: str) -> None:
    with pytest.raises(toolparse.BadOutput, match=message):
        toolparse.wrk(stdout)


def test_wrk_latency_units() -> None:
    out = WRK_OK.replace("1.35ms", "850.00us").replace("12.43ms", "1.20s")
    res = toolparse.wrk(out)
    assert res["p50_us"] == pytest.approx(850) and res["p99_us"] == pytest.approx(1.2e6)


def test_load_generator_command_lines() -> None:
    p = runner.params_for(WORKLOADS["W6"], runner.Options(["W6"]))
    if tools.find("redis-benchmark"):
        argv = tools.client_argv("resp", 6379, p)
        assert argv[1:] == ["-h", "127.0.0.1", "-p", "6379", "-t", "ping,set,get", "-c", "50", "-P", "16",
                            "-n", str(p["requests"]), "--csv", "-q"]
    if tools.find("wrk"):
        assert tools.client_argv("http", 8080, p)[1:] == ["-t1", "-c100", "-d5s", "--latency", "http://127.0.0.1:8080/"]
    quick = runner.params_for(WORKLOADS["W6"], runner.Options(["W6"], quick=True, scale=0.001))
    assert quick["seconds"] == 1 and quick["requests"] >= 1000  # wrk -d takes whole seconds


# ---------------------------------------------------------------- the hand-written servers' RESP parser


def test_resp_commands_arrays_inline_and_incomplete() -> None:
    data = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\nPING\r\n*1\r\n$4\r\nPI"
    args, pos = command(data, 0)
    assert args == [b"SET", b"k", b"hello"] and data[pos:].startswith(b"PING")
    args, pos = command(data, pos)
    assert args == [b"PING"] and data[pos:] == b"*1\r\n$4\r\nPI"
    assert command(data, pos) == (None, pos)  # waits for the rest
    assert command(b"\r\n", 0) == ([], 2)  # an empty inline line
    assert command(b"*2\r\n$0\r\n\r\n$1\r\n\x00\r\n", 0) == ([b"", b"\x00"], 17)  # binary-safe, empty bulk
    for cut in range(1, 27):  # every prefix of a command is incomplete, never an error
        assert command(b"*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n"[:cut], 0) == (None, 0)


@pytest.mark.parametrize("data", [b"*x\r\n", b"*1\r\n+OK\r\n", b"*1\r\n$-5\r\n", b"*1\r\n$1x\r\n",
                                  b"*99999999\r\n", b"A" * (70 * 1024)])
def test_resp_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        command(data, 0)


def test_responder_runs_every_complete_command_and_stops_at_quit() -> None:
    seen: list[list[bytes]] = []

    def execute(args: list[bytes]) -> Any:
        seen.append(args)
        return "OK" if args[0] != b"GET" else b"v"

    def encode(reply: Any) -> bytes:
        return b"+" + reply.encode() + b"\r\n" if isinstance(reply, str) else b"$1\r\n" + reply + b"\r\n"

    respond = responder(execute, encode)
    data = b"*1\r\n$4\r\nPING\r\nGET k\r\n\r\n*1\r\n$3\r\nGE"
    used, out, close = respond(data)
    assert (used, out, close) == (data.rindex(b"*1"), b"+OK\r\n$1\r\nv\r\n", False)
    assert seen == [[b"PING"], [b"GET", b"k"]]
    assert respond(b"quit\r\nPING\r\n") == (6, b"+OK\r\n", True)  # the reply to QUIT, then close
    assert respond(b"") == (0, b"", False)


# ---------------------------------------------------------------- skipped rows and the examples


def _plan(monkeypatch: pytest.MonkeyPatch, found: set[str]) -> runner.Plan:
    monkeypatch.setattr(tools, "find", lambda command: f"/usr/bin/{command}" if command in found else None)
    monkeypatch.setattr(runner, "probe_python", lambda pure: {})
    # Two usable cores, as on the CI machine (PyPy 3.9 has no sched_getaffinity, and the
    # runner then assumes one core and plans same-core cases only).
    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    return runner.make_plan(runner.Options(["W6"], quick=True), creference.CReference())


def test_without_the_load_generators_every_row_is_skipped_with_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan(monkeypatch, set())
    assert [c.key for c in plan.cases] == ["W6-resp", "W6-http"] and plan.tasks == []
    for (case, _), row in plan.rows.items():
        assert row.status == "skipped", row
        want = ("redis-benchmark is not installed (Debian package redis-tools)" if case == "W6-resp"
                else "wrk is not installed (Debian package wrk)")
        assert row.reason == want
    assert {r.impl for r in plan.rows.values()} == set(WORKLOADS["W6"].impls)
    assert any("W6-resp skipped: redis-benchmark" in n for n in plan.notes)


def test_without_a_reference_server_only_its_row_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan(monkeypatch, {"redis-benchmark", "wrk", "redis-server"})
    rows = plan.rows
    assert rows[("W6-http", "c")].status == "skipped"
    assert rows[("W6-http", "c")].reason == "nginx is not installed (Debian package nginx-light)"
    assert rows[("W6-resp", "c")].status == "pending"
    assert all(r.status == "pending" for (_, impl), r in rows.items() if impl != "c")
    assert ("W6-http", "c") not in {(c.key, i) for c, i, _ in plan.tasks}
    assert len(plan.tasks) == 11 * 3  # 6 rows of RESP and 5 of HTTP, 3 repetitions


def test_examples_are_found_next_to_the_package_or_in_the_env_var(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.delenv(examples.ENV, raising=False)
    import fastsock

    assert examples.directory() == Path(fastsock.__file__).resolve().parents[1] / "examples"
    monkeypatch.setenv(examples.ENV, str(tmp_path))
    monkeypatch.setattr(examples, "_LOADED", {})
    mod, reason = examples.load("w6_nothing", ())
    assert mod is None and reason and "w6_nothing.py not found" in reason and examples.ENV in reason
    (tmp_path / "w6_broken.py").write_text("import no_such_module_w6\n")
    mod, reason = examples.load("w6_broken", ())
    assert mod is None and reason and "does not import (ModuleNotFoundError" in reason
    (tmp_path / "w6_partial.py").write_text("def respond(buf):\n    return 0, b'', False\n")
    mod, reason = examples.load("w6_partial", ("respond", "handler"))
    assert mod is None and reason == "examples/w6_partial.py has no handler"
    mod, reason = examples.load("w6_partial", ("respond",))
    assert reason is None and mod is not None and mod.respond(b"") == (0, b"", False)


# ---------------------------------------------------------------- end to end


def run_w6(tmp_path: Path, tag: str, path: Optional[str] = None) -> tuple[subprocess.CompletedProcess[str], Any]:
    js = tmp_path / "w6.json"
    env = _env(tag, **({"PATH": path} if path is not None else {}))
    out = subprocess.run([sys.executable, "-m", "fastsock", "bench", "-w", "W6", "--quick", "--scale", "0.01",
                          "--repeat", "1", "--json", str(js)], env=env, capture_output=True, text=True,
                         timeout=150, cwd=CWD)
    data = json.loads(js.read_text()) if js.exists() else None
    return out, data


@pytest.mark.slow
@pytest.mark.timeout(180)
@needs("redis-benchmark", "redis-server", "wrk", "nginx")
def test_w6_runs_end_to_end_with_the_tools(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    out, data = run_w6(tmp_path, tag)
    assert out.returncode == 0, out.stdout + out.stderr
    assert tagged_pids(tag) == []
    available = {False: probe(False), True: probe(True)}
    assert {c["key"] for c in data["cases"]} == {"W6-resp", "W6-http"}
    for r in data["rows"]:
        table = r["case"]
        if r["impl"] == "c":
            assert r["status"] == "ok", r
        else:
            reason = available[IMPLS[r["impl"]].pure][table][r["impl"]]
            # a server whose example and features are present must run, and run correctly
            assert r["status"] == ("unavailable" if reason else "ok"), r
        if r["status"] != "ok":
            continue
        (m,) = r["runs"][0]["measurements"]
        assert m["ops"] > 0 and m["value"] > 0 and m["server_cpu"] > 0 and m["client_cpu"] > 0
        assert m["server_cpu_per_op"] == pytest.approx(m["server_cpu"] / m["ops"])
        if table == "W6-resp":
            assert set(m["client"]["tests"]) == {"PING_INLINE", "PING_MBULK", "SET", "GET"}
            assert m["ops"] == 4 * data["cases"][0]["params"]["requests"]
    assert "redis-server (C reference)" in out.stdout and "nginx (C reference)" in out.stdout


@pytest.mark.slow
@pytest.mark.timeout(180)
@needs("redis-benchmark")
def test_w6_with_tools_hidden_from_path_reports_skipped_rows(tmp_path: Path) -> None:
    only = tmp_path / "bin"
    only.mkdir()
    redis_benchmark = tool("redis-benchmark")
    assert redis_benchmark is not None
    os.symlink(redis_benchmark, only / "redis-benchmark")  # the RESP client alone: no redis-server, no wrk
    tag = uuid.uuid4().hex
    out, data = run_w6(tmp_path, tag, path=str(only))
    assert out.returncode == 0, out.stdout + out.stderr
    assert tagged_pids(tag) == []
    rows = {(r["case"], r["impl"]): r for r in data["rows"]}
    assert rows[("W6-resp", "c")]["status"] == "skipped"
    assert rows[("W6-resp", "c")]["reason"] == "redis-server is not installed (Debian package redis-server)"
    http = [r for (case, _), r in rows.items() if case == "W6-http"]
    assert len(http) == len(WORKLOADS["W6"].impls)
    assert all(r["status"] == "skipped" and r["reason"] == "wrk is not installed (Debian package wrk)" for r in http)
    assert "skipped: wrk is not installed (Debian package wrk)" in out.stdout
    resp_rows = [r for (case, impl), r in rows.items() if case == "W6-resp" and impl != "c"]
    assert all(r["status"] in ("ok", "unavailable") for r in resp_rows), resp_rows  # the client runs: no skip
