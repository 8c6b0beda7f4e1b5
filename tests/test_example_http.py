"""examples/http_server.py: its `respond` parser alone, then the example itself run as a child
process on each backend, driven by raw sockets, curl, wrk and ab."""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
import re
import signal
import socket as stdsocket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import tools
from serverutil import WAIT, Child, connect, is_eof
from sockutil import pure_only

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "http_server.py"
_spec = importlib.util.spec_from_file_location("http_server_example", EXAMPLE)
assert _spec is not None and _spec.loader is not None
http = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(http)

KEEP, CLOSE, ECHO = http.KEEP, http.CLOSE, http.ECHO
R = http.RESPONSES
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def req(line: bytes = b"GET / HTTP/1.1", *headers: bytes, body: bytes = b"") -> bytes:
    """A request: the line, a Host header (first), the others, the blank line, the body."""
    return b"\r\n".join([line, b"Host: x", *headers, b"", body])


def feed(stream: bytes, step: int = 1) -> tuple[bytes, bool, int]:
    """Deliver `stream` to respond() `step` bytes at a time, holding what it leaves like a
    server does: (everything it answered, whether it asked to close, bytes left unconsumed)."""
    held = bytearray()
    out = []
    for i in range(0, len(stream), step):
        held += stream[i:i + step]
        with memoryview(held) as view:        # released here: respond kept no export of it
            n, reply, close = http.respond(view.toreadonly())
        del held[:n]
        out.append(reply)
        if close:
            return b"".join(out), True, len(held)
    return b"".join(out), False, len(held)


# ---- respond(): the parser alone ---------------------------------------------------------


def test_the_prebuilt_responses_are_well_formed():
    assert R[200, KEEP, False] == OK
    for (code, mode, head), data in R.items():
        top, _, body = data.partition(b"\r\n\r\n")
        lines = top.split(b"\r\n")
        assert re.fullmatch(rb"HTTP/1\.1 %d [A-Za-z ]+" % code, lines[0])
        fields = dict(line.split(b": ", 1) for line in lines[1:])
        assert fields[b"Content-Type"] == b"text/plain"
        full = http.BODY if code == 200 else R[code, KEEP, False].partition(b"\r\n\r\n")[2]
        assert int(fields[b"Content-Length"]) == len(full) > 0
        assert body == (b"" if head else full)
        assert fields.get(b"Connection") == {KEEP: None, CLOSE: b"close", ECHO: b"keep-alive"}[mode]
        assert (fields.get(b"Allow") == b"GET, HEAD") == (code == 405)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_one_request(kind):
    assert http.respond(kind(GET)) == (len(GET), OK, False)


def test_pipelined_requests_are_answered_in_order():
    stream = req() + req(b"GET /nope HTTP/1.1") + req(b"HEAD / HTTP/1.1") + req(b"DELETE / HTTP/1.1") + req()
    assert http.respond(stream) == (len(stream), OK + R[404, KEEP, False] + R[200, KEEP, True]
                                    + R[405, KEEP, False] + OK, False)


def test_a_partial_request_waits():
    for cut in range(len(GET)):
        assert http.respond(GET[:cut]) == (0, b"", False)
    # a complete one before it is answered, the partial one left for later
    assert http.respond(GET + GET[:-1]) == (len(GET), OK, False)


def test_a_body_split_across_calls():
    stream = req(b"POST / HTTP/1.1", b"Content-Length: 10", body=b"0123456789") + GET
    head = stream.index(b"0123")
    assert http.respond(stream[:head]) == (0, b"", False)
    assert http.respond(stream[:head + 9]) == (0, b"", False)
    assert http.respond(stream[:head + 10]) == (head + 10, R[405, KEEP, False], False)
    assert http.respond(stream) == (len(stream), R[405, KEEP, False] + OK, False)
    # a body on GET is consumed too, and not taken for the next request
    body = b"GET / HTTP/1.1\r\n\r\n"
    get = req(b"GET / HTTP/1.1", b"content-LENGTH:  %d " % len(body), body=body)
    assert http.respond(get + GET) == (len(get + GET), OK + OK, False)
    assert http.respond(req(b"GET / HTTP/1.1", b"Content-Length: 0") + GET)[1] == OK + OK


def test_connection_close_is_honoured_and_ends_the_parsing():
    stream = GET + req(b"GET / HTTP/1.1", b"connection: Close") + GET
    assert http.respond(stream) == (len(stream), OK + R[200, CLOSE, False], True)
    both = req(b"GET / HTTP/1.1", b"Connection: keep-alive, close")
    assert http.respond(both) == (len(both), R[200, CLOSE, False], True)
    # only the Connection header counts, not a name that ends like it
    assert http.respond(req(b"GET / HTTP/1.1", b"X-Connection: close"))[1:] == (OK, False)


def test_http_1_0_closes_unless_keep_alive():
    stream = b"GET / HTTP/1.0\r\n\r\n" + GET
    assert http.respond(stream) == (len(stream), R[200, CLOSE, False], True)
    ka = b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"   # what ab -k sends
    assert http.respond(ka + ka) == (2 * len(ka), 2 * R[200, ECHO, False], False)
    assert b"\r\nConnection: keep-alive\r\n" in R[200, ECHO, False]
    head = b"HEAD /x HTTP/1.0\r\nconnection: keep-alive\r\n\r\n"
    assert http.respond(head) == (len(head), R[404, ECHO, True], False)


def test_head_sends_the_headers_only():
    n, out, close = http.respond(req(b"HEAD / HTTP/1.1"))
    assert out == OK[:-13] and not close
    assert http.respond(req(b"HEAD /x HTTP/1.1"))[1] == R[404, KEEP, True]


def test_404_and_405():
    for target in (b"/x", b"/index.html", b"//", b"*", b"http://x/"):
        assert http.respond(req(b"GET " + target + b" HTTP/1.1"))[1:] == (R[404, KEEP, False], False)
    assert http.respond(req(b"GET /?q=1 HTTP/1.1"))[1] == OK
    for method in (b"POST", b"PUT", b"DELETE", b"OPTIONS", b"get"):
        assert http.respond(req(method + b" / HTTP/1.1"))[1:] == (R[405, KEEP, False], False)
    assert b"Allow: GET, HEAD\r\n" in R[405, KEEP, False]


@pytest.mark.parametrize("line", [b"GARBAGE", b"GET /", b"GET / HTTP/1.1 x", b"GET  / HTTP/1.1", b" GET / HTTP/1.1",
                                  b"GET / HTTP/1.1 ", b"GET / http/1.1", b"GET / FOO/1.1", b"GET / HTTP/11",
                                  b"GET\t/ HTTP/1.1", b"G(T / HTTP/1.1", b"GET  HTTP/1.1"])
def test_400_on_a_malformed_request_line(line):
    stream = GET + line + b"\r\nHost: x\r\n\r\n" + GET
    assert http.respond(stream) == (len(stream), OK + R[400, CLOSE, False], True)


def test_other_400s_and_505():
    assert http.respond(b"GET / HTTP/1.1\r\n\r\n") == (18, R[400, CLOSE, False], True)   # no Host
    assert http.respond(req(b"GET / HTTP/2.0")) == (len(GET), R[505, CLOSE, False], True)
    assert http.respond(req(b"GET / HTTP/1.2")) == (len(GET), R[505, CLOSE, False], True)
    # an empty line before a request is ignored (RFC 9112 2.2)
    assert http.respond(b"\r\n" + GET + b"\r\n\r\n" + GET) == (len(GET) * 2 + 6, OK + OK, False)


def test_431_when_the_headers_pass_the_limit():
    limit = http.MAX_HEAD
    fill = limit - len(b"GET / HTTP/1.1\r\nHost: x\r\nX: \r\n\r\n")
    fits = req(b"GET / HTTP/1.1", b"X: " + b"a" * fill)
    assert len(fits) == limit
    assert http.respond(fits) == (limit, OK, False)
    over = req(b"GET / HTTP/1.1", b"X: " + b"a" * (fill + 1))
    assert http.respond(GET + over) == (len(GET + over), OK + R[431, CLOSE, False], True)
    # no complete head yet, but the buffer passes the limit: 431 now, not a wait
    assert http.respond(over[:limit - 1]) == (0, b"", False)
    assert http.respond(over[:limit]) == (limit, R[431, CLOSE, False], True)
    assert http.respond(b"G" * 100_000) == (100_000, R[431, CLOSE, False], True)


def test_413_and_bad_content_lengths():
    assert http.respond(req(b"POST / HTTP/1.1", b"Content-Length: %d" % http.MAX_BODY))[:2] == (0, b"")
    for value in (b"%d" % (http.MAX_BODY + 1), b"9" * 5000):
        stream = GET + req(b"POST / HTTP/1.1", b"Content-Length: " + value)
        assert http.respond(stream) == (len(stream), OK + R[413, CLOSE, False], True)
    for value in (b"abc", b"-1", b"+1", b"1, 1", b"", b"0x10", b"1.0"):
        stream = GET + req(b"POST / HTTP/1.1", b"Content-Length: " + value, body=b"x")
        assert http.respond(stream) == (len(stream), OK + R[400, CLOSE, False], True)
    two = req(b"POST / HTTP/1.1", b"Content-Length: 1", b"Content-Length: 1", body=b"x")
    assert http.respond(two) == (len(two), R[400, CLOSE, False], True)


def test_501_for_transfer_encoding():
    stream = GET + req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked", body=b"1\r\nx\r\n0\r\n\r\n")
    assert http.respond(stream) == (len(stream), OK + R[501, CLOSE, False], True)


@pytest.mark.parametrize("header", [b"Content-Length : 5", b"Content-Length\t: 5", b"Transfer-Encoding : chunked",
                                    b"X: a\nContent-Length: 5", b"X: a\rb\r\nContent-Length: 5"])
def test_a_body_header_among_malformed_lines_is_a_400_not_a_smuggled_request(header):
    """Read differently by a proxy in front, these would hide a request in a body (RFC 9112 5.1)."""
    stream = GET + req(b"POST / HTTP/1.1", header) + b"hello" + GET
    assert http.respond(stream) == (len(stream), OK + R[400, CLOSE, False], True)


STREAMS = {
    "keep-alive": (req() + req(b"POST /x HTTP/1.1", b"Content-Length: 5", body=b"hello") + req(b"HEAD / HTTP/1.1")
                   + b"\r\n" + b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + req(b"PUT / HTTP/1.1")
                   + req(b"GET / HTTP/1.1", b"Connection: close") + req()),
    "http/1.0": req() + b"GET / HTTP/1.0\r\n\r\n" + req(),
    "malformed": req() + req(b"GET / HTTP/1.1", b"Content-Length: 3", body=b"abc") + b"BAD\r\n\r\n" + req(),
    "431": req() + req(b"GET / HTTP/1.1", b"X: " + b"a" * 9000),
    "413": req() + req(b"GET / HTTP/1.1", b"Content-Length: 99999999"),
    "501": req() + req(b"GET / HTTP/1.1", b"Transfer-Encoding: gzip, chunked"),
    "open": req() * 3 + GET[:20],
}


@pytest.mark.parametrize("name", STREAMS)
def test_one_byte_at_a_time_answers_as_whole(name):
    stream = STREAMS[name]
    n, whole, close = http.respond(stream)
    assert feed(stream, 1) == feed(stream, 7) == feed(stream, len(stream)) == (whole, close, len(stream) - n)
    assert whole.count(b"HTTP/1.1 ") >= 2


def test_handler_writes_closes_and_says_what_it_consumed():
    class Conn:
        def __init__(self) -> None:
            self.calls: list[Any] = []

        def write(self, data: bytes) -> None:
            self.calls.append(bytes(data))

        def close(self) -> None:
            self.calls.append("close")

    conn = Conn()
    assert http.handler(conn, memoryview(GET + GET[:5])) == len(GET)
    assert http.handler(conn, memoryview(GET[:5])) == 0
    assert conn.calls == [OK]
    stream = GET + b"BAD\r\n\r\n"
    assert http.handler(conn, memoryview(stream)) == len(stream)
    assert conn.calls == [OK, OK + R[400, CLOSE, False], "close"]


# ---- the example as a process, on each backend ---------------------------------------------

#: Runs the script as `python examples/http_server.py ARGS` would, after naming its backend.
LAUNCH = """
import runpy, sys
import fastsock
print("backend", fastsock.BACKEND, flush=True)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def backends(config: pytest.Config) -> list[str]:
    """The backends under test in this run (as the `impl` fixture's: --backend, --no-c-extensions)."""
    if pure_only(config):
        return ["python"]
    return ["c"] if config.getoption("--backend") == "c" else ["c", "python"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "site" in metafunc.fixturenames:   # one server per backend for the whole module
        metafunc.parametrize("site", backends(metafunc.config), indirect=True, scope="module")
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", backends(metafunc.config))


def start(backend: str, *args: str) -> tuple[Child, tuple[str, int]]:
    module = importlib.import_module("fastsock._py" if backend == "python" else "fastsock._c._speedups")
    child = Child(module, LAUNCH, str(EXAMPLE), "--port", "0", *args)   # picks FASTSOCK_PURE by module
    try:
        assert child.line("backend") == f"backend {backend}"
        line = child.line("listening on ")
        host, port = line[len("listening on "):].rsplit(":", 1)
        assert host == "127.0.0.1" and line == f"listening on {host}:{port}"
        return child, (host, int(port))
    except BaseException:
        child.kill()
        raise


@pytest.fixture(scope="module")
def site(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """The address of the example serving on the backend `request.param`."""
    child, address = start(request.param)
    try:
        yield address
        assert child.proc.poll() is None, child.stderr()   # still serving after every test
        assert "Traceback" not in child.stderr(), child.stderr()
    finally:
        child.kill()


class Reader:
    """HTTP responses read from a client socket (buffered: pipelined ones arrive together)."""

    def __init__(self, sock: stdsocket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(f"EOF with {bytes(self.buf)!r} buffered")
        self.buf += data

    def response(self, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        """(status, headers by lowercase name, body) of the next response."""
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._more()
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
        size = end + 4 + (0 if head else int(headers["content-length"]))
        while len(self.buf) < size:
            self._more()
        body = bytes(self.buf[end + 4:size])
        del self.buf[:size]
        return status, headers, body

    def eof(self) -> bool:
        """True if the server closes the connection next (nothing more buffered)."""
        return not self.buf and is_eof(self.sock, WAIT)


def test_keep_alive_reuses_the_connection(site):
    with connect(site) as sock:
        reader = Reader(sock)
        for _ in range(5):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert reader.response() == (200, {"content-type": "text/plain", "content-length": "13"}, http.BODY)
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.response(head=True)[:2] == (200, {"content-type": "text/plain", "content-length": "13"})
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        status, headers, body = reader.response()
        assert (status, headers["connection"], body) == (200, "close", http.BODY)
        assert reader.eof()


def test_50_pipelined_requests_in_one_write(site):
    paths = [b"/" if i % 3 else b"/missing" for i in range(50)]
    with connect(site) as sock:
        sock.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % p for p in paths))
        reader = Reader(sock)
        got = [reader.response() for _ in paths]
        assert [status for status, _, _ in got] == [200 if p == b"/" else 404 for p in paths]
        assert all(body == http.BODY for status, _, body in got if status == 200)
        sock.sendall(GET)                         # still open, still in step
        assert reader.response()[0] == 200


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\nNONSENSE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nX: " + b"a" * 10_000, 431),   # no end of headers
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\nPOST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n", 413),
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\nPOST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.0\r\n\r\n", 200),
], ids=["400", "431", "413", "501", "http/1.0"])
def test_answered_then_closed(site, request_bytes, status):
    with connect(site) as sock:
        sock.sendall(request_bytes)
        reader = Reader(sock)
        assert reader.response()[0] == 200
        got, headers, _ = reader.response()
        assert (got, headers["connection"]) == (status, "close")
        assert reader.eof()


def test_a_body_sent_in_pieces(site):
    with connect(site) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 30000\r\n\r\n" + b"x" * 10)
        for _ in range(3):
            time.sleep(0.05)                      # separate reads on the server
            sock.sendall(b"y" * 9990)
        sock.settimeout(0.2)
        with pytest.raises((TimeoutError, stdsocket.timeout)):   # no answer before the body's end
            sock.recv(1)
        sock.settimeout(WAIT)
        sock.sendall(b"z" * 20 + GET)             # the body's last 20 bytes, then a request
        reader = Reader(sock)
        assert [reader.response()[0] for _ in range(2)] == [405, 200]   # nothing of the body taken
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc" + GET)
        assert [reader.response()[0] for _ in range(2)] == [200, 200]


def url_of(address: tuple[str, int]) -> str:
    return f"http://{address[0]}:{address[1]}/"


def run(*command: str) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, env=tools.tool_env())
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return proc.stdout


@tools.needs("curl")
def test_curl(site):
    url = url_of(site)
    out = run("curl", "-sS", "--max-time", "20", "-w", "|%{http_code} %{num_connects}\n", url, url + "missing", url)
    assert out == "Hello, World!|200 1\nNot Found\n|404 0\nHello, World!|200 0\n"   # one connection
    out = run("curl", "-sS", "--max-time", "20", "-H", "Connection: close", "-w", "|%{http_code} %{num_connects}\n",
              url, url)
    assert out == "Hello, World!|200 1\nHello, World!|200 1\n"      # closed after each: a new one
    out = run("curl", "-sS", "--max-time", "20", "-I", url)
    assert out.startswith("HTTP/1.1 200 OK\n") and "\nContent-Length: 13\n" in out   # (text mode: \r\n read as \n)
    out = run("curl", "-sS", "--max-time", "20", "-d", "x" * 5000, "-w", "|%{http_code}", url)
    assert out == "Method Not Allowed\n|405"


@pytest.mark.slow  # a load tool run: the main job runs it, other interpreters do not
@tools.needs("wrk")
def test_wrk(site):
    out = run("wrk", "-t1", "-c10", "-d1s", "--timeout", "5s", url_of(site))
    count = re.search(r"(\d+) requests in ", out)
    assert count and int(count.group(1)) > 0, out
    assert "Non-2xx" not in out and "Socket errors" not in out, out


@pytest.mark.slow
@tools.needs("ab")
def test_ab_keep_alive(site):
    out = run("ab", "-q", "-n", "2000", "-c", "10", "-k", "-s", "20", url_of(site))
    fields = dict(re.findall(r"^([A-Za-z -]+):\s+(\S+)", out, re.M))
    assert fields["Complete requests"] == "2000", out
    assert fields["Failed requests"] == "0", out
    assert fields["Keep-Alive requests"] == "2000", out
    assert fields["Document Length"] == "13", out
    assert "Non-2xx" not in out, out


@pytest.mark.slow
def test_workers_then_sigterm(backend):
    child, address = start(backend, "--workers", "2")
    with child:
        deadline = time.monotonic() + WAIT
        for _ in range(4):                        # new connections, spread over the workers
            while True:
                try:
                    sock = connect(address)
                    break
                except ConnectionRefusedError:    # until a worker listens: the supervisor only
                    assert time.monotonic() < deadline, "no worker listens"   # reserves the port
                    time.sleep(0.02)
            with sock:
                sock.sendall(GET)
                assert Reader(sock).response()[2] == http.BODY
        child.signal(signal.SIGTERM)              # the supervisor stops the workers gracefully
        assert child.wait() == 0, child.stderr()
