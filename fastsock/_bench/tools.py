"""W6's standard tools: where they are, what each variant needs, and the load generators' command lines.

RESP: `redis-benchmark` (Debian package redis-tools) against the servers, `redis-server`
(redis-server) as the C reference. HTTP: `wrk` (wrk) against the servers, `nginx`
(nginx-light) as the C reference. A missing load generator skips the variant's whole table;
a missing reference server skips its row; the reason names the package to install.
"""

from __future__ import annotations

import shutil
from typing import Any, Optional

#: command -> the Debian package that provides it
PACKAGES = {"redis-benchmark": "redis-tools", "redis-server": "redis-server", "wrk": "wrk", "nginx": "nginx-light"}
CLIENT = {"resp": "redis-benchmark", "http": "wrk"}
SERVER = {"resp": "redis-server", "http": "nginx"}
RESP_TESTS = "ping,set,get"  # redis-benchmark runs 4 tests for these: PING_INLINE, PING_MBULK, SET, GET
RESP_TEST_COUNT = 4

VARIANT_TITLES = {"resp": "RESP, redis-benchmark -t ping,set,get -c 50 -P 16",
                  "http": "HTTP/1.1, wrk -t1 -c100"}


def find(command: str) -> Optional[str]:
    """The path of `command`: PATH, then /usr/sbin and /usr/local/sbin (Debian's nginx)."""
    return shutil.which(command) or shutil.which(command, path="/usr/sbin:/usr/local/sbin")


def _absent(command: str) -> Optional[str]:
    if find(command) is not None:
        return None
    return f"{command} is not installed (Debian package {PACKAGES[command]})"


def missing_client(variant: str) -> Optional[str]:
    """Why the load generator of `variant` cannot run here, or None."""
    return _absent(CLIENT[variant])


def missing_server(variant: str) -> Optional[str]:
    """Why the C reference server of `variant` cannot run here, or None."""
    return _absent(SERVER[variant])


def client_argv(variant: str, port: int, p: dict[str, Any]) -> list[str]:
    """The load generator's command line against 127.0.0.1:`port`."""
    binary = find(CLIENT[variant])
    assert binary is not None
    if variant == "resp":
        return [binary, "-h", "127.0.0.1", "-p", str(port), "-t", RESP_TESTS, "-c", str(p["resp_conns"]),
                "-P", str(p["pipeline"]), "-n", str(p["requests"]), "--csv", "-q"]
    return [binary, "-t1", f"-c{p['http_conns']}", f"-d{int(p['seconds'])}s", "--latency",
            f"http://127.0.0.1:{port}/"]


def estimate_seconds(variant: str, impl: str, p: dict[str, Any]) -> float:
    """A rough duration of one run (start, load, stop)."""
    start = 0.1 if impl == "c" else 0.3
    if variant == "http":
        return start + float(p["seconds"]) + 0.1
    rate = {"c": 400e3, "fastsock-server": 250e3}.get(impl, 80e3)
    return start + RESP_TEST_COUNT * float(p["requests"]) / rate
