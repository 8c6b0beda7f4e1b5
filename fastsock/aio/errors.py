"""The exception fastsock.aio adds to fastsock's own (IncompleteReadError, FrameTooLarge, ...)."""

from __future__ import annotations

__all__ = ["WriteLimitExceeded"]


class WriteLimitExceeded(BufferError):
    """A write would make the transport hold more than `write_limit` unsent bytes.

    Raised before anything is queued: the transport holds exactly what it held before the
    call. `size` is the bytes the call would have queued, `pending` what the transport held
    (`transport.get_write_buffer_size()`), `limit` the write_limit. Await `drain()` (or
    give up on a peer that does not read) instead of writing more; a single write larger
    than the limit (`size > limit`) never fits, whatever drain() does.
    """

    def __init__(self, size: int, pending: int, limit: int) -> None:
        self.size = size
        self.pending = pending
        self.limit = limit
        advice = ("await drain() first" if size <= limit else
                  "a write this large never fits: split it or raise write_limit")
        super().__init__(f"writing {size} bytes with {pending} bytes pending would exceed "
                         f"write_limit={limit}; {advice}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return type(self), (self.size, self.pending, self.limit)
