"""Option checks and the flow-control marks shared by FramedProtocol and Stream (cold path)."""

from __future__ import annotations

import operator
import sys
from asyncio import selector_events
from typing import Any, Optional

from .errors import WriteLimitExceeded

__all__ = ["DEFAULT_WRITE_LIMIT", "READ_HIGH", "NEVER", "check_write_limit", "read_marks", "payload_size", "total_size",
           "queue_buffers",
           "UNPAUSING", "pause_after_writelines"]

#: Unsent bytes a transport may hold before a write raises WriteLimitExceeded (16 MiB).
DEFAULT_WRITE_LIMIT = 16 * 1024 * 1024
#: A Stream pauses its transport once this many bytes (or max_buffer, if lower) are
#: buffered and no read waits for more: four reads of 64 KiB.
READ_HIGH = 4 * 65536
#: A mark no buffer reaches.
NEVER = sys.maxsize


def check_write_limit(value: Any) -> int:
    """The validated write_limit: an int >= 1 (TypeError, ValueError), or None for no limit."""
    if value is None:
        return NEVER
    limit = operator.index(value)
    if limit < 1:
        raise ValueError(f"write_limit must be >= 1 (or None for no limit), not {limit}")
    return limit


def read_marks(max_buffer: int) -> tuple[int, int]:
    """(high, low): reading pauses at `high` buffered bytes and resumes below `low`."""
    high = min(READ_HIGH, max_buffer)
    return high, max(1, high // 4)


def payload_size(data: Any) -> int:
    """The bytes of one bytes-like object (TypeError for anything else)."""
    return len(data) if type(data) is bytes else memoryview(data).nbytes


def total_size(buffers: Optional[list[Any]]) -> int:
    """The bytes of a list of bytes-like objects."""
    if not buffers:
        return 0
    return sum(map(payload_size, buffers))


#: asyncio's socket transport whose writelines() never pauses the protocol (cpython#127655:
#: Python 3.12.0-3.12.8 and 3.13.0-3.13.1), so that drain() would never wait; None elsewhere.
#: FramedProtocol.send_frames, which inlines queue_buffers, checks it too.
UNPAUSING: Any = (
    getattr(selector_events, "_SelectorSocketTransport", None)
    if (3, 12) <= sys.version_info[:3] < (3, 12, 9) or (3, 13) <= sys.version_info[:3] < (3, 13, 2)
    else None)


def queue_buffers(transport: Any, buffers: Any, size: int, limit: int) -> None:
    """transport.writelines(buffers), `size` bytes in all, unless that would leave more than
    `limit` bytes unsent in the transport: then WriteLimitExceeded, and nothing is queued.
    Every bounded write of Stream and FramedProtocol goes through here."""
    pending = transport.get_write_buffer_size()
    if pending + size > limit:
        raise WriteLimitExceeded(size, pending, limit)
    transport.writelines(buffers)
    if UNPAUSING is not None:
        pause_after_writelines(transport)


def pause_after_writelines(transport: Any) -> None:
    """On the Pythons of UNPAUSING: what the fixed writelines() does, pause_writing() past
    the high-water mark (and the transport's resume_writing() later), as write() always did."""
    if isinstance(transport, UNPAUSING):
        transport._maybe_pause_protocol()
