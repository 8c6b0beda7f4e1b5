"""examples/resp_server.py driven by the Redis project's own clients, redis-cli and
redis-benchmark (Debian package redis-tools), on both backends."""

from __future__ import annotations

import csv
import io
import pathlib
import signal
import subprocess

import pytest
import tools
from serverutil import Child, connect

from fastsock import resp

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "resp_server.py"
RUN_EXAMPLE = f"""
import runpy, sys
sys.argv = [{str(EXAMPLE)!r}, *sys.argv[1:]]
runpy.run_path({str(EXAMPLE)!r}, run_name="__main__")
"""

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server(impl):
    """(host, port) of the example serving in a child process of the backend of `impl`."""
    with Child(impl, RUN_EXAMPLE, "--port", "0") as child:
        line = child.line("listening on ")
        host, port = line.split()[-1].rsplit(":", 1)
        yield host, int(port)
        child.signal(signal.SIGTERM)
        assert child.wait() == 0, child.stderr()
        assert "Traceback" not in child.stderr(), child.stderr()


def cli(address, *args: str) -> str:
    host, port = address
    out = subprocess.run([tools.tool("redis-cli"), "-h", host, "-p", str(port), *args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout[:-1] if out.stdout.endswith("\n") else out.stdout  # its last newline only


def test_raw_protocol(server):
    """The replies byte for byte (pipelined, inline, errors, QUIT closing the connection)."""
    with connect(server) as sock:
        sock.sendall(resp.command("SET", "k", "v") + resp.command("GET", "k") + b"GET nokey\r\n"
                     + resp.command("MGET", "k", "nokey") + resp.command("INCR", "n") + resp.command("DEL", "k", "x")
                     + resp.command("EXISTS", "k") + resp.command("ECHO", "hi") + resp.command("PING")
                     + resp.command("FOO", "bar") + resp.command("GET") + resp.command("QUIT")
                     + resp.command("PING"))  # after QUIT: never answered
        want = (b"+OK\r\n$1\r\nv\r\n$-1\r\n*2\r\n$1\r\nv\r\n$-1\r\n:1\r\n:1\r\n:0\r\n$2\r\nhi\r\n+PONG\r\n"
                b"-ERR unknown command 'FOO'\r\n-ERR wrong number of arguments for 'get' command\r\n+OK\r\n")
        got = b""
        while True:
            data = sock.recv(4096)
            if not data:
                break
            got += data
        assert got == want


@tools.needs("redis-cli")
def test_redis_cli(server):
    assert cli(server, "PING") == "PONG"
    assert cli(server, "SET", "greeting", "hello world") == "OK"
    assert cli(server, "GET", "greeting") == "hello world"
    assert cli(server, "MGET", "greeting", "nokey") == "hello world\n"
    assert cli(server, "INCR", "counter") == "1"
    assert cli(server, "INCR", "counter") == "2"
    assert cli(server, "INCR", "greeting").startswith("ERR value is not an integer")
    for text in ("9223372036854775807", " 1_0 ", "+1", "-9223372036854775810"):  # Redis refuses each
        assert cli(server, "SET", "n", text) == "OK"
        assert cli(server, "INCR", "n").startswith("ERR value is not an integer"), text
    assert cli(server, "SET", "n", "-5") == "OK" and cli(server, "INCR", "n") == "-4"
    assert cli(server, "EXISTS", "greeting", "counter", "nokey") == "2"
    assert cli(server, "DEL", "greeting", "nokey") == "1"
    assert cli(server, "ECHO", "a\nb") == "a\nb"
    assert cli(server, "CONFIG", "GET", "save") == "save\n"
    assert cli(server, "NOSUCH").startswith("ERR unknown command")
    # Commands from standard input, one connection: the pipeline mode of redis-cli.
    host, port = server
    out = subprocess.run([tools.tool("redis-cli"), "-h", host, "-p", str(port), "--pipe"],
                         input=b"".join(resp.command("SET", f"p{i}", str(i)) for i in range(1000)),
                         capture_output=True, timeout=30)
    assert out.returncode == 0 and b"errors: 0, replies: 1000" in out.stdout, out.stdout + out.stderr
    assert cli(server, "GET", "p999") == "999"


def benchmark(address, *args: str) -> dict[str, float]:
    """redis-benchmark's requests/s per test (its --csv output)."""
    host, port = address
    out = subprocess.run([tools.tool("redis-benchmark"), "-h", host, "-p", str(port), "--csv", *args],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    # A warning about the server (e.g. "Could not fetch server CONFIG") fails; -k 0's advice
    # about the client machine's TIME_WAIT sockets does not.
    warnings = [w for w in out.stderr.splitlines() if "WARNING" in w and "Keepalive disabled" not in w]
    assert not warnings and "Error" not in out.stdout + out.stderr, out.stdout + out.stderr
    rows = list(csv.reader(io.StringIO(out.stdout)))
    return {row[0]: float(row[1]) for row in rows[1:] if row and row[0] != "test"}


@pytest.mark.slow  # a load tool run: the main job runs it, other interpreters do not
@tools.needs("redis-benchmark", "redis-cli")
def test_redis_benchmark_pipelined(server):
    """The W6 command line at a small count: every test completes (redis-benchmark waits
    for every reply), and the SETs landed."""
    result = benchmark(server, "-t", "ping,set,get", "-c", "50", "-P", "16", "-n", "20000")
    assert set(result) == {"PING_INLINE", "PING_MBULK", "SET", "GET"}, result
    assert all(rate > 0 for rate in result.values()), result
    assert len(cli(server, "GET", "key:__rand_int__")) == 3  # redis-benchmark SETs a 3-byte value


@pytest.mark.slow
@tools.needs("redis-benchmark")
def test_redis_benchmark_reconnecting_clients(server):
    """-k 0: a new connection for every request (connects, closes, reconnects)."""
    result = benchmark(server, "-t", "ping,get", "-c", "20", "-k", "0", "-n", "2000")
    assert set(result) == {"PING_INLINE", "PING_MBULK", "GET"} and all(r > 0 for r in result.values()), result


@pytest.mark.slow
@tools.needs("redis-benchmark")
def test_redis_benchmark_random_keys_and_large_values(server):
    """-r: random keys; -d: 100 KiB values, each command split over many reads."""
    result = benchmark(server, "-t", "set,get", "-c", "10", "-P", "4", "-n", "2000", "-r", "1000", "-d", "102400")
    assert set(result) == {"SET", "GET"} and all(r > 0 for r in result.values()), result
