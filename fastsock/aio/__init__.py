"""fastsock.aio: fastsock's framing inside asyncio and uvloop, without a new event loop.

- `open_connection`, `open_unix_connection`, `start_server`, `start_unix_server`: asyncio's
  stream functions, with one `Stream` per connection (reader and writer in one object):
  `await stream.read_frame()`, `await stream.read_frames()`, `async for frame in stream`,
  `stream.write_frame(payload)`, `await stream.drain()`.
- `FramedProtocol`: an asyncio.BufferedProtocol base class that receives straight into the
  decoder and calls `frame_received(frame)` / `frames_received(frames)`.

Both run on fastsock's FrameDecoder and FrameEncoder (the compiled backend, or the pure
one), on the default loop and on uvloop, over TCP, AF_UNIX and TLS (`ssl=`). Writes are
bounded: a write that would leave more than `write_limit` bytes unsent raises
`WriteLimitExceeded` and queues nothing.
"""

from __future__ import annotations

from ._limits import DEFAULT_WRITE_LIMIT
from .connect import open_connection, open_unix_connection, start_server, start_unix_server
from .errors import WriteLimitExceeded
from .protocol import FramedProtocol
from .stream import Stream

__all__ = [
    "open_connection",
    "open_unix_connection",
    "start_server",
    "start_unix_server",
    "Stream",
    "FramedProtocol",
    "WriteLimitExceeded",
    "DEFAULT_WRITE_LIMIT",
]
