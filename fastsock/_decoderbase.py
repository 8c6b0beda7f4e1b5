"""What both backends' `FrameDecoder` and `FrameEncoder` share: argument checks, the
messages of their errors, and the constants of their buffer rules. Cold-path Python only;
the hot paths live in each backend (fastsock/_py/decoder.py, fastsock/_c/decoder.pxi).

The decoder's buffer follows the Stream's rules (fastsock._streambase): a fill asks for
READ_SIZE bytes of free space (or `sizehint`), or for a frame whose size is known
max(that, min(rest, max(held, GROW_FROM))); the capacity never passes max_buffer; an emptied
buffer above shrink_threshold(READ_SIZE) gives its memory back.
"""

from __future__ import annotations

import operator
import sys
from typing import Any

from . import _streambase
from ._errors import FrameTooLarge
from .framing import Framing

__all__ = [
    "READ_SIZE",
    "SHRINK_AT",
    "NO_FRAMING",
    "NOT_PENDING",
    "check_max_buffer",
    "check_encoder_framing",
    "full_error",
    "append_error",
    "oversized_frame",
    "exactly_error",
]

#: get_buffer()'s free space without a sizehint (the Stream's default read_size).
READ_SIZE = _streambase.DEFAULT_READ_SIZE
#: An emptied buffer whose capacity exceeds this gives its memory back.
SHRINK_AT = _streambase.shrink_threshold(READ_SIZE)
NO_FRAMING = "this FrameDecoder has no framing: pass framing=... to FrameDecoder() or set .framing"
NOT_PENDING = "buffer_updated()/commit() without a pending get_buffer() (each get_buffer() allows one)"


def check_max_buffer(max_buffer: Any) -> int:
    """Validated max_buffer: TypeError for a non-integer, ValueError below 1 or absurdly large."""
    size = operator.index(max_buffer)
    if size < 1:
        raise ValueError(f"max_buffer must be >= 1, not {size}")
    if size > sys.maxsize // 4:
        raise ValueError(f"max_buffer is too large: {size}")
    return size


def check_encoder_framing(framing: Any) -> Framing:
    """FrameEncoder's framing: a fastsock.framing.Framing instance (TypeError otherwise, None too)."""
    if not isinstance(framing, Framing):
        raise TypeError(f"FrameEncoder needs a fastsock.framing.Framing (LengthPrefix, Delimiter, ...), "
                        f"not {type(framing).__name__}")
    return framing


def full_error(held: int, max_buffer: int) -> FrameTooLarge:
    """get_buffer() when held == max_buffer: no room at all is left."""
    return FrameTooLarge(held, max_buffer, f"the decoder's buffer is full ({held} bytes, max_buffer={max_buffer})")


def append_error(held: int, size: int, max_buffer: int) -> FrameTooLarge:
    """append()/feed() of `size` bytes onto `held` would pass max_buffer (nothing appended)."""
    exc = FrameTooLarge(held + size, max_buffer,
                        f"{size} more bytes on {held} held exceed max_buffer={max_buffer} (nothing appended)")
    exc.frames = []  # type: ignore[attr-defined]
    return exc


def oversized_frame(total: int, max_buffer: int, frames: list[Any]) -> FrameTooLarge:
    """A partial frame whose announced total cannot fit max_buffer; carries the frames before it."""
    exc = FrameTooLarge(total, max_buffer, f"a frame of {total} bytes does not fit max_buffer={max_buffer}")
    exc.frames = frames  # type: ignore[attr-defined]
    return exc


def exactly_error(size: int, max_buffer: int) -> FrameTooLarge:
    """read_exactly(n) with n > max_buffer: the decoder could never hold n bytes."""
    return FrameTooLarge(size, max_buffer, f"read_exactly({size}) can never be satisfied: max_buffer={max_buffer}")
