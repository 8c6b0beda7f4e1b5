"""Parsers of W6's load generators' output: redis-benchmark --csv and wrk --latency.

Each returns the figures as a dict, or raises BadOutput saying what is wrong (missing tests,
errors reported by the tool, non-2xx responses, socket errors): such a run is failed, not
measured.
"""

from __future__ import annotations

import csv
import re
from typing import Any

from .tools import RESP_TEST_COUNT


class BadOutput(ValueError):
    """The load generator's output shows a failed run, or is not what this parser knows."""


def redis_benchmark(stdout: str, stderr: str, requests: int) -> dict[str, Any]:
    """The CSV of `redis-benchmark --csv -n requests` (redis 6+: a header row "test","rps",...
    then one row per test; older versions: "TEST","rps" rows without a header).

    Returns {"tests": {name: {"rps", "p50_ms", "p99_ms"}}, "ops": requests x tests, "seconds":
    the sum of each test's requests / rps, "rps": ops / seconds, "p50_us"/"p99_us": the
    slowest test's (redis 6+)}."""
    for text in (stdout, stderr):  # an error reply, a refused connection, CONFIG GET unanswered
        for line in text.splitlines():
            if "error" in line.lower() or "could not" in line.lower():
                raise BadOutput(f"redis-benchmark reported: {line.strip()[:200]}")
    rows = [r for r in csv.reader(ln for ln in stdout.splitlines() if ln.startswith('"')) if r]
    if rows and rows[0][:2] == ["test", "rps"]:
        head, rows = rows[0], rows[1:]
    else:
        head = ["test", "rps"]
    tests: dict[str, dict[str, float]] = {}
    for row in rows:
        fields = dict(zip(head, row))
        try:
            rps = float(fields["rps"])
            p50 = float(fields["p50_latency_ms"]) if "p50_latency_ms" in fields else None
            p99 = float(fields["p99_latency_ms"]) if "p99_latency_ms" in fields else None
        except (KeyError, ValueError):
            raise BadOutput(f"unexpected redis-benchmark CSV row {row!r}") from None
        if not rps > 0:
            raise BadOutput(f"redis-benchmark test {fields['test']}: {rps} requests/s")
        tests[fields["test"]] = {"rps": rps, "p50_ms": p50, "p99_ms": p99}  # type: ignore[dict-item]
    if len(tests) != RESP_TEST_COUNT:
        raise BadOutput(f"redis-benchmark reported {len(tests)} tests ({', '.join(tests) or 'none'}), "
                        f"expected {RESP_TEST_COUNT}: {(stdout + stderr).strip()[-300:]!r}")
    seconds = sum(requests / t["rps"] for t in tests.values())
    ops = requests * len(tests)
    p50s = [t["p50_ms"] for t in tests.values() if t["p50_ms"] is not None]
    p99s = [t["p99_ms"] for t in tests.values() if t["p99_ms"] is not None]
    return {"tests": tests, "ops": ops, "seconds": seconds, "rps": ops / seconds,
            "p50_us": max(p50s) * 1e3 if p50s else None, "p99_us": max(p99s) * 1e3 if p99s else None}


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(number: str, unit: str) -> float:
    return float(number) * _UNITS[unit]


def wrk(stdout: str) -> dict[str, Any]:
    """The report of `wrk --latency`: {"ops": requests completed, "seconds", "rps":
    Requests/sec, "p50_us", "p99_us"}; BadOutput when wrk counted socket errors (connect, read,
    write, timeout) or non-2xx/3xx responses, or printed no summary."""
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", stdout, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", stdout, re.M)
    if done is None or rate is None:
        raise BadOutput(f"no wrk summary in its output: {stdout.strip()[-300:]!r}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", stdout)
    if errors and any(int(n) for n in errors.groups()):
        raise BadOutput(f"wrk: {errors.group(0)}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", stdout)
    if non2xx and int(non2xx.group(1)):
        raise BadOutput(f"wrk: {non2xx.group(0)}")
    ops = int(done.group(1))
    if ops == 0:
        raise BadOutput("wrk completed no request")
    latency = {pct: _seconds(num, unit) * 1e6
               for pct, num, unit in re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", stdout, re.M)}
    return {"ops": ops, "seconds": _seconds(done.group(2), done.group(3)), "rps": float(rate.group(1)),
            "p50_us": latency.get("50"), "p99_us": latency.get("99")}
