"""A small Redis-compatible key-value server on fastsock.Server: the RESP framing decodes each
command into its arguments in C, one batch handler call answers every command a read
brought (pipelines), and the replies of a batch leave in one system call.

Commands: PING, ECHO, SET, GET, DEL, INCR, MGET, EXISTS, CONFIG GET (`save` and
`appendonly`, which redis-benchmark asks for at start; empty for any other), COMMAND
(empty), QUIT; anything else gets
``-ERR unknown command``. redis-cli and redis-benchmark work against it unchanged:

    python examples/resp_server.py --port 6380 &
    redis-cli -p 6380 set greeting hello        # OK
    redis-benchmark -p 6380 -t ping,set,get -c 50 -P 16 -q

With --workers N, N processes share the port (SO_REUSEPORT), each with its own store.
`execute` is plain Python over a dict, so the same code can run under any server loop (the
benchmark W6 runs it on asyncio and uvloop too).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Optional

import fastsock
from fastsock import resp

STORE: dict[bytes, bytes] = {}

#: QUIT's reply: the handler closes the connection once it is queued.
BYE = resp.Reply(b"+OK\r\n")
NOT_AN_INTEGER = resp.error("ERR value is not an integer or out of range")


def _wrong_arity(args: list[bytes]) -> resp.Reply:
    name = args[0].decode("utf-8", "replace").lower()
    return resp.error(f"ERR wrong number of arguments for '{name}' command")


def ping(args: list[bytes]) -> Any:
    if len(args) == 1:
        return resp.PONG
    return args[1] if len(args) == 2 else _wrong_arity(args)


def echo(args: list[bytes]) -> Any:
    return args[1] if len(args) == 2 else _wrong_arity(args)


def set_(args: list[bytes]) -> Any:
    if len(args) != 3:  # no EX/PX/NX/XX options in this example
        return _wrong_arity(args) if len(args) < 3 else resp.error("ERR syntax error")
    STORE[args[1]] = args[2]
    return resp.OK


def get(args: list[bytes]) -> Any:
    if len(args) != 2:
        return _wrong_arity(args)
    return STORE.get(args[1], resp.NULL)


def delete(args: list[bytes]) -> Any:
    if len(args) < 2:
        return _wrong_arity(args)
    return sum(STORE.pop(key, None) is not None for key in args[1:])


def incr(args: list[bytes]) -> Any:
    if len(args) != 2:
        return _wrong_arity(args)
    try:
        value = int(STORE.get(args[1], b"0")) + 1
    except ValueError:
        return NOT_AN_INTEGER
    if value >= 1 << 63:
        return NOT_AN_INTEGER
    STORE[args[1]] = b"%d" % value
    return value


def mget(args: list[bytes]) -> Any:
    if len(args) < 2:
        return _wrong_arity(args)
    return [STORE.get(key) for key in args[1:]]  # None: a null bulk string in an array


def exists(args: list[bytes]) -> Any:
    if len(args) < 2:
        return _wrong_arity(args)
    return sum(key in STORE for key in args[1:])


#: What CONFIG GET reports (redis-benchmark reads `save` and `appendonly` at start).
CONFIG = {b"save": b"", b"appendonly": b"no"}


def config(args: list[bytes]) -> Any:
    if len(args) < 3 or args[1].upper() != b"GET":
        return resp.error("ERR CONFIG supports GET <parameter> only in this server")
    found = []  # name, value pairs of the parameters asked for (no glob patterns)
    for name in args[2:]:
        if name.lower() in CONFIG:
            found += [name.lower(), CONFIG[name.lower()]]
    return found


def command(args: list[bytes]) -> Any:
    return []  # no command table (redis-cli asks for COMMAND DOCS at start)


def quit_(args: list[bytes]) -> Any:
    return BYE


COMMANDS: dict[bytes, Callable[[list[bytes]], Any]] = {
    b"PING": ping,
    b"ECHO": echo,
    b"SET": set_,
    b"GET": get,
    b"DEL": delete,
    b"INCR": incr,
    b"MGET": mget,
    b"EXISTS": exists,
    b"CONFIG": config,
    b"COMMAND": command,
    b"QUIT": quit_,
}


def execute(args: list[bytes]) -> Any:
    """Run one command (its arguments, as the RESP framing reads them); the reply value, for
    fastsock.resp.encode (or a RESP Server) to encode."""
    run = COMMANDS.get(args[0]) or COMMANDS.get(args[0].upper())  # clients send upper case
    if run is None:
        name = args[0].decode("utf-8", "replace")
        return resp.error(f"ERR unknown command '{name}'".replace("\r", " ").replace("\n", " "))
    return run(args)


def handler(conn: fastsock.Connection, commands: list[list[bytes]]) -> Optional[list[Any]]:
    """The batch handler: every complete command of one read, the replies in order."""
    replies = []
    for args in commands:
        if not args:  # "*0", "*-1" or an empty line: Redis answers nothing
            continue
        reply = execute(args)
        if reply is BYE:  # QUIT: the replies so far, then close (later commands are ignored)
            for earlier in replies:
                conn.send(earlier)
            conn.send(reply)
            conn.close()
            return None
        replies.append(reply)
    return replies


def make_server(**options: Any) -> fastsock.Server:
    """The key-value server (options: fastsock.Server's, e.g. workers=2)."""
    return fastsock.Server(handler, framing=fastsock.RESP(), batch=True, **options)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6379, help="0: any free port")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    args = parser.parse_args(argv)
    server = make_server(workers=args.workers)
    host, port = server.listen((args.host, args.port))[:2]
    print(f"listening on {host}:{port}", flush=True)
    server.serve_forever()
    server.close()


if __name__ == "__main__":
    main(sys.argv[1:])
