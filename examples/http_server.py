"""HTTP/1.1 on fastsock.Server's raw mode (framing=None): the handler sees every byte buffered
so far, answers each complete request and says how many bytes it used; the server keeps the
rest for the next call. It serves `GET /` (13 bytes), keeps connections alive (HTTP/1.1 unless
`Connection: close`, HTTP/1.0 only with `Connection: keep-alive`), answers pipelined requests
in order in one write, reads Content-Length bodies, and answers 400 (malformed request), 413,
431 (headers over 8 KiB), 501 (Transfer-Encoding) or 505, then closes.

An example of raw mode, not an HTTP framework: no chunked bodies, no Date header (responses
are prebuilt bytes), no obs-fold, header values are not validated beyond what it uses.

Run: python examples/http_server.py [--host 127.0.0.1] [--port 8080] [--workers 1]
     then: curl http://127.0.0.1:8080/   or   wrk -t1 -c100 -d5s http://127.0.0.1:8080/
(FASTSOCK_PURE=1 selects the pure-Python backend.)
"""

from __future__ import annotations

import argparse
import re

import fastsock

BODY = b"Hello, World!"
MAX_HEAD = 8192          # request line + headers + the blank line, at most (431 past it)
MAX_BODY = 1 << 20       # a Content-Length above it: 413
READ_SIZE = 65536        # the server's read size; with the two limits, its max_buffer

KEEP, CLOSE, ECHO = 0, 1, 2   # keep alive (HTTP/1.1); close; keep alive and say so (HTTP/1.0)
_CONNECTION = (b"", b"Connection: close\r\n", b"Connection: keep-alive\r\n")
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            413: b"Content Too Large", 431: b"Request Header Fields Too Large",
            501: b"Not Implemented", 505: b"HTTP Version Not Supported"}


def _build(code: int, mode: int, head: bool) -> bytes:
    body = BODY if code == 200 else _REASONS[code] + b"\n"
    allow = b"Allow: GET, HEAD\r\n" if code == 405 else b""
    headers = (b"HTTP/1.1 %d %s\r\n%sContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n"
               % (code, _REASONS[code], allow, len(body), _CONNECTION[mode]))
    return headers if head else headers + body


#: Every response this server sends, prebuilt: (status, connection mode, HEAD) -> bytes.
RESPONSES = {(code, mode, head): _build(code, mode, head)
             for code in _REASONS for mode in (KEEP, CLOSE, ECHO) for head in (False, True)}
_OK = tuple(RESPONSES[200, mode, False] for mode in (KEEP, CLOSE, ECHO))
_VERSIONS = {b"HTTP/1.1": KEEP, b"HTTP/1.0": CLOSE}   # -> the version's default mode
_GET_ROOT = [b"GET", b"/", b"HTTP/1.1"]
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+\Z")
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]\Z")
#: The header block ("\r\n" + lines + "\r\n", lower-cased), every line `token: value`.
_HEADER_LINES = re.compile(rb"(?:\r\n[-!#$%&'*+.^_`|~0-9a-z]+:[^\r\n]*)*\r\n")


def respond(buf) -> tuple[int, bytes, bool]:
    """Answer every complete request at the start of `buf` (any bytes-like object, not kept):
    (bytes consumed, the responses joined in order, close after writing them). An error
    response (400, 413, 431, 501, 505) or `Connection: close` ends the parsing, and then the
    whole buffer counts as consumed (the connection reads nothing more)."""
    # One copy: find/split want bytes, and a server's view dies after the call (tobytes is
    # the cheaper copy of a memoryview, a third of bytes()'s cost).
    data = buf.tobytes() if type(buf) is memoryview else bytes(buf)
    size = len(data)
    out = []
    pos = 0
    while pos < size:
        end = data.find(b"\r\n\r\n", pos, pos + MAX_HEAD)
        if end < 0:          # incomplete: wait for more, unless the head is past the limit already
            if size - pos >= MAX_HEAD:
                return _fail(out, size, 431)
            break
        line_end = data.find(b"\r\n", pos)
        line = data[pos:line_end]
        # The request line nearly every client sends, recognised by one comparison.
        parts = _GET_ROOT if line == b"GET / HTTP/1.1" else line.split(b" ")
        version = _VERSIONS.get(parts[2]) if len(parts) == 3 else None
        if version is None:
            if line_end == pos:  # an empty line before a request line is ignored (RFC 9112 2.2)
                pos += 2
                continue
            return _fail(out, size, 505 if len(parts) == 3 and _VERSION.match(parts[2]) else 400)
        # "\r\nname: value" per header, then "\r\n": every name follows a "\n". Searched with
        # partition, CPython's cheapest bytes search (find parses a tuple of arguments, and
        # `in` first tries its operand as an int): (before, name or b"", what follows it).
        fields = data[line_end:end + 2].lower()
        mode = version
        _, found, rest = fields.partition(b"\nconnection:")
        if found:
            tokens = _value(rest).split(b",")
            if len(tokens) > 1:
                tokens = [t.strip() for t in tokens]
            if b"close" in tokens:
                mode = CLOSE
            elif mode == CLOSE and b"keep-alive" in tokens:
                mode = ECHO
        # Where a body's framing is named, every header line must be well formed: a proxy in
        # front that read "Content-Length : 5" or a bare-LF line differently from us could
        # smuggle a request in a body (RFC 9112 5.1, 2.2). Other headers are read leniently.
        framed = fields.partition(b"content-length")[1] or fields.partition(b"transfer-encoding")[1]
        if framed and not _HEADER_LINES.fullmatch(fields):
            return _fail(out, size, 400)
        if framed and fields.partition(b"\ntransfer-encoding:")[1]:  # chunked: not supported here
            return _fail(out, size, 501)
        if version == KEEP and not fields.partition(b"\nhost:")[1]:
            return _fail(out, size, 400)        # HTTP/1.1 requires Host (RFC 9112 3.2)
        nxt = end + 4
        _, found, rest = fields.partition(b"\ncontent-length:") if framed else (b"", b"", b"")
        if found:
            value = _value(rest)
            if not value.isdigit() or rest.partition(b"\ncontent-length:")[1]:
                return _fail(out, size, 400)    # not a number, or two of them
            if len(value) > 15 or int(value) > MAX_BODY:
                return _fail(out, size, 413)
            nxt += int(value)
            if nxt > size:   # the body is not all here yet: this request waits
                break
        method, target, _ = parts
        if target == b"/" and method == b"GET":
            out.append(_OK[mode])
        else:
            code = _status(method, target)
            if code == 400:
                return _fail(out, size, 400)
            out.append(RESPONSES[code, mode, method == b"HEAD"])
        pos = nxt
        if mode == CLOSE:
            return size, b"".join(out), True
    return pos, b"".join(out), False


def _value(rest: bytes) -> bytes:
    """The header value at the start of `rest` (each header line ends in CRLF)."""
    return rest[:rest.index(b"\r")].strip()


def _status(method: bytes, target: bytes) -> int:
    """The status of a well-formed request that is not `GET /` (400 if method or target is not)."""
    if not target or not _TOKEN.match(method):
        return 400
    if target.partition(b"?")[0] != b"/":
        return 404
    return 200 if method in (b"GET", b"HEAD") else 405


def _fail(out: list, size: int, code: int) -> tuple[int, bytes, bool]:
    out.append(RESPONSES[code, CLOSE, False])
    return size, b"".join(out), True


def handler(conn, data) -> int:
    """The raw-mode handler: write the responses to what is complete, close if told to."""
    consumed, out, close = respond(data)
    if out:
        conn.write(out)
    if close:
        conn.close()         # flushes the responses first
    return consumed


def make_server(**options) -> fastsock.Server:
    """The HTTP server (options: fastsock.Server's, e.g. workers=2, over these defaults)."""
    settings = dict(read_size=READ_SIZE, max_buffer=MAX_HEAD + MAX_BODY + READ_SIZE,  # a request + one read
                    idle_timeout=60, frame_timeout=30)                               # idle clients, slowloris
    settings.update(options)
    return fastsock.Server(handler, framing=None, **settings)


def main(argv=None) -> None:
    """Serve until SIGINT/SIGTERM, after printing `listening on HOST:PORT`."""
    parser = argparse.ArgumentParser(description="HTTP/1.1 'Hello, World!' on fastsock.Server raw mode")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    args = parser.parse_args(argv)
    server = make_server(workers=args.workers)
    try:
        host, port = server.listen((args.host, args.port))[:2]
        print(f"listening on {host}:{port}", flush=True)
        server.serve_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
