"""Write-side flow control shared by FramedProtocol and Stream's protocol: the transport's
pause_writing()/resume_writing() calls, `drain()`, and the end of the connection."""

from __future__ import annotations

import asyncio
from typing import Any, Optional

__all__ = ["WriteFlow"]


class WriteFlow:
    """Mixin for an asyncio protocol: `drain()` waits while the transport has said
    pause_writing() and returns once it says resume_writing(); once the connection is lost
    it raises the connection's error (ConnectionResetError when it closed without one).
    `_init_flow()` must run in __init__, `_lose_flow(exc)` in connection_lost."""

    transport: Any
    _write_paused: bool
    _lost: bool
    _lost_error: Optional[BaseException]
    _drainers: Optional[list[asyncio.Future[None]]]

    def _init_flow(self) -> None:
        self._write_paused = False
        self._lost = False
        self._lost_error = None
        self._drainers = None

    def pause_writing(self) -> None:
        """The transport's buffer passed its high-water mark: drain() now waits."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """The transport's buffer drained below its low-water mark: wake every drain()."""
        self._write_paused = False
        self._wake_drainers()

    def _wake_drainers(self) -> None:
        drainers = self._drainers
        if drainers:
            self._drainers = None
            for waiter in drainers:
                if not waiter.done():
                    waiter.set_result(None)

    def _lose_flow(self, exc: Optional[BaseException]) -> None:
        self._lost = True
        self._lost_error = exc
        self._write_paused = False
        self._wake_drainers()

    def _lost_exception(self) -> BaseException:
        exc = self._lost_error
        return exc if exc is not None else ConnectionResetError("Connection lost")

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark (at once if
        it is). Raises the connection's error, or ConnectionResetError, once it is lost."""
        if self._lost:
            raise self._lost_exception()
        if self.transport is not None and self.transport.is_closing():
            # Closing: let connection_lost() run (a write+drain loop on a dead connection
            # must not spin without yielding), then report it.
            await asyncio.sleep(0)
            if self._lost:
                raise self._lost_exception()
        if self._write_paused:
            await self._wait_drained()

    async def _wait_drained(self) -> None:
        while self._write_paused:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self._drainers is None:
                self._drainers = [waiter]
            else:
                self._drainers.append(waiter)
            try:
                await waiter
            finally:
                drainers = self._drainers
                if drainers is not None and waiter in drainers:
                    drainers.remove(waiter)
        if self._lost:
            raise self._lost_exception()
