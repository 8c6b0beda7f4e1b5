"""The comparison runner (`fastsock bench`): arguments, JSON, smoke runs, cleanup after failures.

Runs go through `python -m fastsock bench` in a subprocess with a timeout, with tiny counts
(--scale), so the whole file stays within seconds of real work.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

import fastsock
from fastsock import cli
from fastsock._bench import creference, report
from fastsock._bench.spec import IMPLS, WORKLOADS

# Children import the fastsock under test (installed or in-place), never a source tree in the cwd.
ROOT = Path(fastsock.__file__).resolve().parents[1]
CWD = tempfile.gettempdir()
TAG_ENV = "FASTSOCK_BENCH_TEST_TAG"
# slow: child processes, C references compiled; tests the runner, not the interpreter under it
pytestmark = pytest.mark.slow


def _env(tag: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env[TAG_ENV] = tag  # inherited by every child: lets the test find leftovers
    env.pop("FASTSOCK_PURE", None)
    env.update(extra)
    return env


def tagged_pids(tag: str) -> list[int]:
    """Live processes (not zombies) whose environment carries `tag`."""
    found = []
    needle = f"{TAG_ENV}={tag}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        found.append(int(entry))
    return found


def run_bench(args: list[str], tag: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastsock", "bench", *args], env=_env(tag, **env),
                          capture_output=True, text=True, timeout=timeout, cwd=CWD)


def probe(pure: bool) -> dict[str, dict[str, str | None]]:
    env = _env("probe", **({"FASTSOCK_PURE": "1"} if pure else {}))
    out = subprocess.run([sys.executable, "-m", "fastsock._bench.server", "probe"], env=env,
                         capture_output=True, text=True, timeout=60, check=True, cwd=CWD)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "--workload", "W9"], "unknown workload W9"),
        (["bench", "--workload", "W1,nope"], "unknown workload NOPE"),
        (["bench", "--impl", "stdlib-best,rust"], "unknown implementation rust"),
        (["bench", "--repeat", "0"], "--repeat must be at least 1"),
        (["bench", "--repeat", "x"], "invalid int value"),
        (["bench", "--workload", "W1", "--impl", "gevent"], "none of the chosen implementations"),
        (["bench", "--json", "/nonexistent-dir/x.json"], "directory does not exist"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(argv: list[str], message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_no_subcommand_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "bench" in capsys.readouterr().err


def test_plot_without_matplotlib_is_a_clear_usage_error(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from fastsock._bench import plot

    monkeypatch.setattr(plot, "have_matplotlib", lambda: False)
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--plot", "out.png"])
    assert exc.value.code == 2
    assert "pip install 'fastsock[bench]'" in capsys.readouterr().err


def test_list_names_every_workload_and_implementation(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for key in [*WORKLOADS, *IMPLS]:
        assert key in out


def test_every_workload_lists_known_implementations_with_c_and_stdlib_best() -> None:
    for wl in WORKLOADS.values():
        assert set(wl.impls) <= set(IMPLS)
        assert "c" in wl.impls and "stdlib-best" in wl.impls
        assert any(IMPLS[i].fastsock for i in wl.impls), wl.key
        assert wl.kind in ("single", "points", "memory", "tool")
    for key in ("W4", "W5", "M1", "W6"):  # the Server rows (Unavailable until fastsock.Server is built)
        assert {"fastsock-server", "fastsock-server-pure"} <= set(WORKLOADS[key].impls)
    assert "fastsock-server-batch" in WORKLOADS["W5"].impls
    assert {"fastsock", "fastsock-pure"} <= set(WORKLOADS["W4"].impls)  # the Selector rows stay


def test_info_prints_backend_poller_and_features() -> None:
    out = subprocess.run([sys.executable, "-m", "fastsock", "info"], env=_env("info"), capture_output=True, cwd=CWD,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for word in ("backend:", "poller:", "epoll", "MSG_WAITALL", "sendmmsg", "SO_REUSEPORT", "TCP_NOTSENT_LOWAT"):
        assert word in out.stdout


def test_no_compiler_skips_the_c_reference_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(creference, "find_compiler", lambda: None)
    ref = creference.build()
    assert ref.binaries == {} and "no C compiler" in ref.note


@pytest.mark.timeout(120)
def test_c_reference_compiles_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTSOCK_BENCH_CACHE", str(tmp_path))
    ref = creference.build()
    if creference.find_compiler() is None:  # a machine without cc: the rows are skipped with a note
        assert ref.binaries == {} and ref.note
        return
    assert sorted(ref.binaries) == list(creference.PROGRAMS), ref.note
    for path in ref.binaries.values():
        assert Path(path).is_file() and os.access(path, os.X_OK) and str(tmp_path) in path
    assert creference.build().binaries == ref.binaries  # cached: same paths


# ---------------------------------------------------------------- smoke runs


# W6 drives the standard tools (redis-benchmark, wrk) for seconds per row: test_bench_w6.py runs it
OWN_TOOLS = [w for w in WORKLOADS if WORKLOADS[w].kind != "tool"]


@pytest.mark.timeout(180)
def test_smoke_run_of_every_workload_on_both_backends(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    js, md = tmp_path / "out.json", tmp_path / "out.md"
    out = run_bench(["--quick", "--scale", "0.01", "--repeat", "1", "-w", ",".join(OWN_TOOLS), "--json", str(js),
                     "--markdown", str(md)], tag, timeout=170)
    assert out.returncode == 0, out.stdout + out.stderr
    assert tagged_pids(tag) == []
    data = json.loads(js.read_text())
    assert data["schema"] == report.SCHEMA
    for key in ("command", "options", "machine", "cases", "rows", "notes", "elapsed_s", "load_generator"):
        assert key in data
    for key in ("cpu", "cores", "kernel", "python", "libraries", "date"):
        assert key in data["machine"]
    assert data["machine"]["libraries"]["fastsock"]
    assert {c["key"] for c in data["cases"]} >= {"W1", "W2", "W2-same-core", "W3", "W4", "W5", "M1"}
    available = {False: probe(False), True: probe(True)}
    rows = {(r["case"], r["impl"]): r for r in data["rows"]}
    for case in data["cases"]:
        for impl in WORKLOADS[case["workload"]].impls:
            row = rows[(case["key"], impl)]
            assert row["status"] in ("ok", "unavailable", "skipped"), row
            if impl == "c":
                assert row["status"] == ("ok" if creference.find_compiler() else "skipped"), row
                continue
            reason = available[IMPLS[impl].pure][case["workload"]][impl]
            # an implementation whose features are present must run, and run correctly
            assert row["status"] == ("unavailable" if reason else "ok"), row
            if row["status"] != "ok":
                continue
            assert len(row["runs"]) == 1 and row["summary"]
            for m in row["runs"][0]["measurements"]:
                assert m["ops"] > 0 and m["server_cpu"] >= 0 and m["client_cpu"] >= 0
                if case["workload"] == "M1":  # RSS growth: may be 0 for a handful of connections
                    client = m["client"]
                    assert client["accepted"] == client["conns"] == case["params"]["conns"], client
                    assert client["rss_before_kib"] > 0 and m["value"] == pytest.approx(
                        (client["rss_after_kib"] - client["rss_before_kib"]) / client["conns"])
                else:
                    assert m["value"] > 0
            if case["workload"] == "W4":
                assert sorted(m["point"] for m in row["runs"][0]["measurements"]) == [1, 10, 100]
            if case["workload"] == "W5":
                ms = row["runs"][0]["measurements"]
                assert sorted(m["point"] for m in ms) == [10, 100]
                assert all(m["checked"] >= m["ops"] > 0 for m in ms)  # every reply was checked
    text = out.stdout
    for title in ("W1 bulk", "W2 ping-pong", "W3 pipelined frames", "W4 echo under concurrency",
                  "W5 pipelined framed RPC under concurrency", "M1 idle connections", "Summary:", "Machine:"):
        assert title in text
    assert "| implementation |" in md.read_text()


@pytest.mark.timeout(120)
def test_python_load_generator(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    js = tmp_path / "out.json"
    out = run_bench(["--quick", "--scale", "0.01", "--repeat", "1", "--client", "python", "-i", "c,stdlib-best",
                     "-w", ",".join(OWN_TOOLS), "--json", str(js)], tag)  # W6's clients are the tools
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(js.read_text())
    assert data["load_generator"] == "python"
    assert all(r["status"] == "ok" for r in data["rows"] if r["impl"] == "stdlib-best")
    assert tagged_pids(tag) == []


@pytest.mark.timeout(120)
def test_plot_writes_a_png(tmp_path: Path) -> None:
    from fastsock._bench.plot import have_matplotlib

    png = tmp_path / "bench.png"
    out = run_bench(["--quick", "--scale", "0.01", "--repeat", "1", "-w", "W2,W4", "-i", "c,stdlib-best,fastsock",
                     "--plot", str(png)], uuid.uuid4().hex)
    if not have_matplotlib():  # the optional dependency is missing: a clear usage error, nothing run
        assert out.returncode == 2 and "matplotlib" in out.stderr
        return
    assert out.returncode == 0, out.stdout + out.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- W5 and M1 load generators


def _w5_bad_server(listener: socket.socket, mangle: str) -> None:
    """Answers W5 requests correctly, then (from the 200th reply on, once) wrongly, as `mangle` says."""
    conn, _ = listener.accept()
    with conn:
        data, replies, mangled = b"", 0, False
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            data += chunk
            out: list[bytes] = []
            while len(data) >= 4 and len(data) >= 4 + int.from_bytes(data[:4], "big"):
                size = int.from_bytes(data[:4], "big")
                frame, data = data[:4 + size], data[4 + size:]
                replies += 1
                if replies >= 200 and not mangled:
                    if mangle == "payload":
                        frame = frame[:-1] + bytes([frame[-1] ^ 1])
                        mangled = True
                    elif mangle == "order" and out:  # needs an earlier reply of this read to swap with
                        out.insert(len(out) - 1, frame)
                        mangled = True
                        continue
                    elif mangle == "extra":
                        out.append(frame)
                        mangled = True
                out.append(frame)
            try:
                conn.sendall(b"".join(out))
            except OSError:
                return


@pytest.mark.timeout(60)
@pytest.mark.parametrize("client", ["c", "python"])
@pytest.mark.parametrize("mangle", ["payload", "order", "extra"])
def test_w5_load_generator_checks_every_reply(client: str, mangle: str) -> None:
    if client == "c":
        binary = creference.build().binary("w5")
        if binary is None:
            pytest.skip("no C compiler")
        argv = [binary]
    else:
        argv = [sys.executable, "-m", "fastsock._bench.pyclient", "w5"]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=_w5_bad_server, args=(listener, mangle), daemon=True)
        server.start()
        port = listener.getsockname()[1]
        out = subprocess.run([*argv, "client", str(port), str(os.getpid()), "1", "2", "0.05", "16", "64", "30"],
                             env=_env("w5-check"), capture_output=True, text=True, timeout=40, cwd=CWD)
        server.join(10)
    assert out.returncode != 0, out.stdout
    # a duplicated reply shows as the next one not matching its request (or as one too many)
    assert "does not match" in out.stderr or "more replies than requests" in out.stderr, out.stderr


def test_m1_is_skipped_with_a_reason_when_the_descriptor_limit_is_too_low(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastsock._bench import runner

    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    reason = runner.nofile_problem({"conns": 10_000, "warmup_conns": 16})
    assert reason and "4096" in reason and "10,000" in reason and "ulimit -Hn" in reason
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, resource.RLIM_INFINITY))
    assert runner.nofile_problem({"conns": 10_000, "warmup_conns": 16}) is None
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    monkeypatch.setattr(runner, "probe_python", lambda pure: {})
    plan = runner.make_plan(runner.Options(["M1"], quick=True), creference.CReference())
    assert plan.tasks == [] and any("M1 skipped" in n for n in plan.notes)
    assert {r.status for r in plan.rows.values()} == {"skipped"}
    assert all("RLIMIT_NOFILE" in r.reason for r in plan.rows.values())


# ---------------------------------------------------------------- failures and cleanup


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workload", ["W1", "W2", "W3", "W4", "W5"])
def test_a_server_crashing_mid_run_is_reported_and_the_run_goes_on(workload: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    js = tmp_path / "out.json"
    out = run_bench(["--quick", "--scale", "0.01", "--repeat", "2", "-w", workload, "--same-core",
                     "-i", "c,stdlib-naive,stdlib-best,threaded", "--json", str(js)],
                    tag, FASTSOCK_BENCH_CRASH="stdlib-best")
    assert out.returncode == 1, out.stdout + out.stderr  # a failed row makes the exit status 1
    assert tagged_pids(tag) == []
    rows = {r["impl"]: r for r in json.loads(js.read_text())["rows"]}
    crashed = rows["stdlib-best"]
    assert crashed["status"] == "failed" and len(crashed["failures"]) == 2
    assert "SIGKILL" in crashed["reason"] or "failed" in crashed["reason"], crashed["reason"]
    others = [i for i in ("c", "stdlib-naive", "threaded") if i in rows]
    assert others and all(rows[i]["status"] == "ok" for i in others), rows
    assert "failed: " in out.stdout


@pytest.mark.timeout(120)
def test_ctrl_c_stops_every_child(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-m", "fastsock", "bench", "-w", "W4", "-i", "stdlib-best,threaded",
                             "--repeat", "3"], env=_env(tag), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=CWD)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(tagged_pids(tag)) < 3:  # runner + server + client
            time.sleep(0.05)
        assert len(tagged_pids(tag)) >= 3, "the run did not start"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    deadline = time.monotonic() + 5
    while tagged_pids(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tagged_pids(tag) == []


@pytest.mark.timeout(120)
def test_sigterm_also_stops_every_child() -> None:
    tag = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-m", "fastsock", "bench", "-w", "W4", "-i", "stdlib-best",
                             "--repeat", "3"], env=_env(tag), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=CWD)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(tagged_pids(tag)) < 3:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130
    deadline = time.monotonic() + 5
    while tagged_pids(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tagged_pids(tag) == []
