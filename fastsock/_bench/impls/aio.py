"""The fastsock.aio rows of W2-W5 (issue 12): the asyncio streams and Protocol servers of those
workloads written the way a user writes them with fastsock.aio, on asyncio's default loop and on
uvloop.

- "aio-stream" / "aio-stream-uvloop": `fastsock.aio.start_server`, one coroutine per connection
  on a `fastsock.aio.Stream` (W2: read_frame, write_frame, drain; W3: read_frames and count;
  W4: read, write, drain; W5: read_frames, write_frames, drain).
- "aio-protocol" / "aio-protocol-uvloop": a `fastsock.aio.FramedProtocol` subclass on
  `loop.create_server` whose frames_received(frames) answers with self.send_frames(frames)
  (W3: counts them).

They do the work of their baselines: W2 echoes exactly one frame per round trip; W3 counts
frames and payload bytes and the totals are checked; W5 answers every request frame with a frame
carrying the same payload (the payloads are the frames the decoder cut, as an RPC handler would
get them); W4 echoes every 1 KiB message (the FramedProtocol row frames the stream as
FixedLength(msg_size): a FramedProtocol delivers frames, not bytes; the Stream row reads bytes as
the streams rows do). Every row is unavailable, with the reason, while fastsock.aio is missing.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
from typing import Any, Callable, Optional

from .common import Meter, fastsock_api, loop_missing, missing_fastsock, run_loop

READ_SIZE = 65536  # W4's read size, as the streams servers'
MAX_PAYLOAD = 16 * 1024 * 1024  # W5: a length prefix above this is a broken client (as w5.MAX_PAYLOAD)

# impl key -> (API, event loop)
KEYS: dict[str, tuple[str, str]] = {
    "aio-stream": ("stream", "asyncio"),
    "aio-protocol": ("protocol", "asyncio"),
    "aio-stream-uvloop": ("stream", "uvloop"),
    "aio-protocol-uvloop": ("protocol", "uvloop"),
}

NEEDS = ("Stream", "FramedProtocol", "start_server")  # what the rows use of fastsock.aio


def aio_api() -> Any:
    """The fastsock.aio module, typed loosely (it lands on main with issue 12)."""
    return importlib.import_module("fastsock.aio")


def missing(key: str) -> Optional[str]:
    """Why the fastsock.aio row `key` cannot run here, or None."""
    try:
        aio = aio_api()
    except ImportError as exc:
        return f"fastsock.aio is not in this fastsock build ({type(exc).__name__}: {exc})"
    absent = [n for n in NEEDS if not hasattr(aio, n)]
    if absent:
        return f"fastsock.aio lacks {', '.join(absent)} (not in this fastsock build)"
    return missing_fastsock("FrameDecoder", "FrameEncoder", "LengthPrefix", "FixedLength") or loop_missing(KEYS[key][1])


def _length_prefix(max_size: Optional[int] = None) -> Any:
    return fastsock_api().LengthPrefix(4, "big", max_size)


def _once(kind: str, start: Callable[[asyncio.Future[Any]], Any]) -> Any:
    """Run one connection's server on a new loop of `kind`: `start(done)` starts it (returns the
    asyncio.Server); the result is what the connection sets on `done` (or its exception)."""

    async def main() -> Any:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        server = await start(done)
        try:
            return await done
        finally:
            server.close()

    return run_loop(kind, main)


def _forever(kind: str, start: Callable[[], Any]) -> Any:
    """Serve on a new loop of `kind` until the runner stops the process."""

    async def main() -> None:
        server = await start()
        await server.serve_forever()

    return run_loop(kind, main)


def _settle(done: asyncio.Future[Any], value: Any = None, exc: Optional[BaseException] = None) -> None:
    if not done.done():
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(value)


# ---------------------------------------------------------------- W2 ping-pong


def w2_stream(kind: str) -> Callable[..., dict[str, Any]]:
    """read_frame, write_frame, drain: one frame per round trip, until EOF."""

    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        aio, fastsock = aio_api(), fastsock_api()

        def start(done: asyncio.Future[Any]) -> Any:
            async def handle(stream: Any) -> None:
                meter.start()
                frames = 0
                clean = True
                read_frame, write_frame, drain = stream.read_frame, stream.write_frame, stream.drain
                try:
                    while True:
                        try:
                            frame = await read_frame()
                        except fastsock.IncompleteReadError:  # EOF inside a frame
                            clean = False
                            break
                        except EOFError:  # the client closed between frames
                            break
                        write_frame(frame)
                        await drain()
                        frames += 1
                except Exception as exc:  # the run fails with the reason rather than at its limit
                    _settle(done, exc=exc)
                    raise
                finally:
                    meter.stop()
                    stream.close()
                _settle(done, (frames, clean))

            return aio.start_server(handle, sock=listener, framing=_length_prefix())

        frames, clean = _once(kind, start)
        return {"ops": frames, "ok": clean}

    return run


def w2_protocol(kind: str) -> Callable[..., dict[str, Any]]:
    """frames_received(frames) -> send_frames(frames)."""

    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        aio = aio_api()
        FramedProtocol: Any = aio.FramedProtocol

        def start(done: asyncio.Future[Any]) -> Any:
            class Echo(FramedProtocol):  # type: ignore[misc]
                framing = _length_prefix()
                n_frames = 0
                clean = True

                def connection_made(self, transport: Any) -> None:
                    super().connection_made(transport)
                    meter.start()

                def frames_received(self, frames: list[Any]) -> None:
                    self.send_frames(frames)
                    self.n_frames += len(frames)

                def frame_error(self, exc: BaseException) -> None:
                    self.clean = False
                    super().frame_error(exc)

                def eof_received(self) -> Any:
                    meter.stop()
                    try:
                        return super().eof_received()
                    finally:
                        _settle(done, (self.n_frames, self.clean))

                def connection_lost(self, exc: Optional[BaseException]) -> None:
                    super().connection_lost(exc)
                    if not done.done():  # lost before the client's EOF
                        meter.stop()
                        _settle(done, (self.n_frames, False))

            return asyncio.get_running_loop().create_server(Echo, sock=listener)

        frames, clean = _once(kind, start)
        return {"ops": frames, "ok": clean}

    return run


# ---------------------------------------------------------------- W3 pipelined frames


def _w3_result(frames: int, nbytes: int, p: dict[str, Any], clean: bool) -> dict[str, Any]:
    ok = clean and frames == p["frames"] and nbytes == p["frames"] * p["payload"]
    return {"ops": frames, "bytes": nbytes, "ok": ok}


def w3_stream(kind: str) -> Callable[..., dict[str, Any]]:
    """read_frames until [] (the clean EOF); count frames and payload bytes."""

    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        aio, fastsock = aio_api(), fastsock_api()

        def start(done: asyncio.Future[Any]) -> Any:
            async def handle(stream: Any) -> None:
                meter.start()
                frames = nbytes = 0
                clean = True
                read_frames = stream.read_frames
                try:
                    while True:
                        try:
                            batch = await read_frames()
                        except fastsock.IncompleteReadError:
                            clean = False
                            break
                        if not batch:
                            break
                        frames += len(batch)
                        nbytes += sum(map(len, batch))
                except Exception as exc:
                    _settle(done, exc=exc)
                    raise
                finally:
                    meter.stop()
                    stream.close()
                _settle(done, (frames, nbytes, clean))

            return aio.start_server(handle, sock=listener, framing=_length_prefix())

        frames, nbytes, clean = _once(kind, start)
        return _w3_result(frames, nbytes, p, clean)

    return run


def w3_protocol(kind: str) -> Callable[..., dict[str, Any]]:
    """frames_received(frames) counts the frames and their payload bytes."""

    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        aio = aio_api()
        FramedProtocol: Any = aio.FramedProtocol

        def start(done: asyncio.Future[Any]) -> Any:
            class Count(FramedProtocol):  # type: ignore[misc]
                framing = _length_prefix()
                n_frames = n_bytes = 0
                clean = True

                def connection_made(self, transport: Any) -> None:
                    super().connection_made(transport)
                    meter.start()

                def frames_received(self, frames: list[Any]) -> None:
                    self.n_frames += len(frames)
                    self.n_bytes += sum(map(len, frames))

                def frame_error(self, exc: BaseException) -> None:
                    self.clean = False
                    super().frame_error(exc)

                def eof_received(self) -> Any:
                    meter.stop()
                    try:
                        return super().eof_received()
                    finally:
                        _settle(done, (self.n_frames, self.n_bytes, self.clean))

                def connection_lost(self, exc: Optional[BaseException]) -> None:
                    super().connection_lost(exc)
                    if not done.done():  # lost before the client's EOF
                        meter.stop()
                        _settle(done, (self.n_frames, self.n_bytes, False))

            return asyncio.get_running_loop().create_server(Count, sock=listener)

        frames, nbytes, clean = _once(kind, start)
        return _w3_result(frames, nbytes, p, clean)

    return run


# ---------------------------------------------------------------- W4 echo under concurrency


def w4_stream(kind: str) -> Callable[..., Any]:
    """read (up to READ_SIZE bytes), write, drain: the streams rows' loop on a fastsock.aio.Stream."""

    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> Any:
        aio = aio_api()

        async def handle(stream: Any) -> None:
            read, write, drain = stream.read, stream.write, stream.drain
            try:
                while True:
                    data = await read(READ_SIZE)
                    if not data:
                        break
                    write(data)
                    await drain()
            except ConnectionError:
                pass
            finally:
                stream.close()

        return _forever(kind, lambda: aio.start_server(handle, sock=listener))

    return run


def w4_protocol(kind: str) -> Callable[..., Any]:
    """FixedLength(msg_size) frames (the client's messages), each echoed: send_frames(frames)."""

    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> Any:
        aio = aio_api()
        FramedProtocol: Any = aio.FramedProtocol

        class Echo(FramedProtocol):  # type: ignore[misc]
            framing = fastsock_api().FixedLength(int(p["msg_size"]))

            def frames_received(self, frames: list[Any]) -> None:
                self.send_frames(frames)

        return _forever(kind, lambda: asyncio.get_running_loop().create_server(Echo, sock=listener))

    return run


# ---------------------------------------------------------------- W5 pipelined framed RPC


def w5_stream(kind: str) -> Callable[..., Any]:
    """read_frames, write_frames (one reply frame per request, same payload), drain."""

    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> Any:
        aio, fastsock = aio_api(), fastsock_api()

        async def handle(stream: Any) -> None:
            read_frames, write_frames, drain = stream.read_frames, stream.write_frames, stream.drain
            try:
                while True:
                    frames = await read_frames()
                    if not frames:
                        break
                    write_frames(frames)
                    await drain()
            except (ConnectionError, EOFError, fastsock.FrameTooLarge):  # a broken client: drop it
                pass
            finally:
                stream.close()

        return _forever(kind, lambda: aio.start_server(handle, sock=listener, framing=_length_prefix(MAX_PAYLOAD)))

    return run


def w5_protocol(kind: str) -> Callable[..., Any]:
    """frames_received(frames) -> send_frames(frames); a bad frame closes the connection (the
    default frame_error)."""

    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> Any:
        aio = aio_api()
        FramedProtocol: Any = aio.FramedProtocol

        class RPC(FramedProtocol):  # type: ignore[misc]
            framing = _length_prefix(MAX_PAYLOAD)

            def frames_received(self, frames: list[Any]) -> None:
                self.send_frames(frames)

        return _forever(kind, lambda: asyncio.get_running_loop().create_server(RPC, sock=listener))

    return run


FACTORIES: dict[str, dict[str, Callable[[str], Callable[..., Any]]]] = {
    "W2": {"stream": w2_stream, "protocol": w2_protocol},
    "W3": {"stream": w3_stream, "protocol": w3_protocol},
    "W4": {"stream": w4_stream, "protocol": w4_protocol},
    "W5": {"stream": w5_stream, "protocol": w5_protocol},
}


def servers(workload: str) -> dict[str, Callable[..., Any]]:
    """The four fastsock.aio servers of `workload`, by impl key (for its SERVERS table)."""
    return {key: FACTORIES[workload][api](loop) for key, (api, loop) in KEYS.items()}
