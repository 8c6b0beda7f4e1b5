"""FramedProtocol: an asyncio.BufferedProtocol that receives straight into a FrameDecoder and
hands the application whole frames; its sends frame in the backend (C or Python) and give
the transport one writelines() per call."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Optional

from .. import _streambase
from .._errors import FrameTooLarge, IncompleteReadError
from ..framing import Framing, FramingError
from . import _backend
from ._flow import WriteFlow
from ._limits import DEFAULT_WRITE_LIMIT, UNPAUSING, check_write_limit, pause_after_writelines, queue_buffers
from .errors import WriteLimitExceeded

__all__ = ["FramedProtocol"]


class FramedProtocol(WriteFlow, asyncio.BufferedProtocol):
    """FramedProtocol(framing=None, *, max_buffer=64 MiB, write_limit=16 MiB)

    Base class of a framed asyncio protocol (default loop or uvloop, TCP, AF_UNIX, TLS).
    The transport receives straight into the decoder's buffer (get_buffer/buffer_updated);
    each read's complete frames go to `frames_received(frames)` in one call, whose default
    calls `frame_received(frame)` per frame. Override either. Frames are what
    `fastsock.Stream.read_frame` returns (bytes; a list of bytes for RESP).

    `framing` is the argument, or else the class attribute of a subclass
    (`framing = LengthPrefix(4)`). `max_buffer` bounds the bytes held for a frame being
    received; a frame too large for it or for the framing's max_size, or malformed bytes,
    call `frame_error(exc)` after every frame before them was delivered (default: close the
    transport). EOF inside a frame calls frame_error with an IncompleteReadError.

    Writing: `send_frame(payload)` / `send_frames(payloads)` encode and hand the transport
    one writelines() per call; `await drain()` waits while the transport has paused writing.
    A send that would leave more than `write_limit` bytes (None: no limit) unsent in the
    transport raises `WriteLimitExceeded` and queues nothing. `pause_reading()` and
    `resume_reading()` stop and restart the transport's reading (for a full queue of your own).

    Subclasses that override connection_made or connection_lost call the base method.
    """

    #: The framing instances use when constructed without one (a subclass sets it).
    framing: Optional[Framing] = None
    #: The transport, from connection_made() on.
    transport: Any

    def __init__(self, framing: Optional[Framing] = None, *,
                 max_buffer: int = _streambase.DEFAULT_MAX_BUFFER,
                 write_limit: Optional[int] = DEFAULT_WRITE_LIMIT) -> None:
        if framing is None:
            framing = type(self).framing
        if framing is None:
            raise TypeError(f"{type(self).__name__} needs a framing: pass framing=... or set the class "
                            "attribute `framing`")
        impl = _backend.impl
        self._decoder = impl.FrameDecoder(framing, max_buffer=max_buffer)
        self._encoder = impl.FrameEncoder(framing)
        self._max_buffer: int = self._decoder.max_buffer
        self._write_limit = check_write_limit(write_limit)
        self.framing = framing
        self.transport = None
        self._init_flow()
        self._reading_paused = False  # by pause_reading(), until resume_reading()
        self._held = False  # bytes came in while paused: decode them at resume_reading()
        self._eof_held = False  # ... and then the EOF that followed them
        self._input_ended = False  # frame_error() was called, or the EOF was handled
        if type(self).get_buffer is FramedProtocol.get_buffer:
            # The transport calls the decoder itself: no Python frame per read.
            self.get_buffer = self._decoder.get_buffer  # type: ignore[method-assign]
        self._delivery: Any = None
        if type(self).buffer_updated is FramedProtocol.buffer_updated:
            # buffer_updated() below as one backend callable (C in the compiled backend): a
            # read that completes frames reaches frames_received() with no Python frame
            # between; the rest comes back to _hold, _bad_frame and _deliver.
            self._delivery = impl._FrameDelivery(self._decoder, self)
            self.buffer_updated = self._delivery  # type: ignore[method-assign]

    # -- the transport's calls ------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        """Keeps the transport as `self.transport`."""
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        """The decoder's free space (see FrameDecoder.get_buffer)."""
        return self._decoder.get_buffer(sizehint)  # type: ignore[no-any-return]

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` landed in the buffer: deliver every complete frame with one frames_received()
        (while reading is paused: keep them for resume_reading())."""
        if self._reading_paused:
            self._hold(nbytes)
            return
        try:
            frames = self._decoder.buffer_updated(nbytes)
        except (FrameTooLarge, FramingError) as exc:
            self._bad_frame(exc)
            return
        if frames:  # _deliver() written out: this is every read's path
            self.frames_received(frames)
        elif self._decoder.buffered >= self._max_buffer:
            self._deliver(frames)

    def _deliver(self, frames: list[Any]) -> None:
        if frames:
            self.frames_received(frames)
        elif self._decoder.buffered >= self._max_buffer:  # a frame no buffer this size can complete
            self._input_ended = True
            self.frame_error(FrameTooLarge(self._decoder.buffered, self._max_buffer,
                                           f"no frame ends within max_buffer={self._max_buffer} bytes"))

    def _hold(self, nbytes: int) -> None:
        """Bytes read although reading is paused: transports that ignore a pause_reading()
        made in connection_made() (uvloop, and asyncio on Python 3.9/3.10: cpython#103607),
        and asyncio's TLS before 3.11, which hands over a read's records one by one. They wait
        in the decoder, undecoded, until resume_reading(); the transport is paused again:
        resumed first, as asyncio's 3.9/3.10 transport believes it is paused already (it set
        the flag, then started reading anyway) and would ignore a second pause_reading()."""
        self._decoder.commit(nbytes)
        self._held = True
        transport = self.transport
        transport.resume_reading()
        transport.pause_reading()

    def _bad_frame(self, exc: Exception) -> None:
        self._input_ended = True
        frames = getattr(exc, "frames", None)
        if frames:
            self.frames_received(frames)
        self.frame_error(exc)

    def eof_received(self) -> Optional[bool]:
        """The peer finished sending; EOF inside a frame calls frame_error(IncompleteReadError).
        Returns None: the transport closes (return True from an override to keep writing).
        While reading is paused with bytes held, the EOF waits for resume_reading() (and the
        transport stays open until then, but under TLS, which closes regardless)."""
        if self._held:
            if self._reading_paused:
                self._eof_held = True
                return self.transport.get_extra_info("sslcontext") is None
            self._deliver_held()  # resumed, but the EOF came before _deliver_held's turn
        self._end_of_input()
        return None

    def _end_of_input(self) -> None:
        self._input_ended = True
        try:
            self._decoder.eof()
        except IncompleteReadError as exc:
            self.frame_error(exc)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        """Wakes every drain() (which then raises the error, or ConnectionResetError). A
        connection that ends inside a frame with no EOF first (a reset; asyncio's TLS before
        Python 3.11, which reports the peer's close_notify with connection_lost() alone)
        calls frame_error(IncompleteReadError) first: a cut frame is never dropped silently."""
        try:
            self._report_cut_frame()
        finally:
            self._lose_flow(exc)

    def _report_cut_frame(self) -> None:
        """The connection is lost: unless the input already ended (EOF, frame_error), deliver
        the frames held while paused (now, or at resume_reading() if still paused) and then
        report a frame cut off by the loss."""
        if self._input_ended:
            return
        if self._held and not self._reading_paused:
            self._deliver_held()
            if self._input_ended:
                return
        if self._held:  # paused: resume_reading() delivers them, then ends the input
            self._eof_held = True
        elif self._decoder.buffered:
            self._end_of_input()

    # -- the application's side -----------------------------------------------------------

    def frames_received(self, frames: list[Any]) -> None:
        """Every complete frame of one read, in order. Default: frame_received() for each."""
        frame_received = self.frame_received
        for frame in frames:
            frame_received(frame)

    def frame_received(self, frame: Any) -> None:
        """One frame (bytes, or RESP's list of bytes). Override this or frames_received()."""
        raise NotImplementedError(f"{type(self).__name__} must override frame_received() or frames_received()")

    def frame_error(self, exc: Exception) -> None:
        """The input cannot go on: FrameTooLarge, FramingError, or (at EOF inside a frame)
        IncompleteReadError. Every frame before the bad bytes has been delivered. Default:
        close the transport (replies already sent still go out)."""
        if self.transport is not None:
            self.transport.close()

    def send_frame(self, payload: Any) -> None:
        """Write one frame carrying `payload` (a RESP value for RESP): one writelines() call.
        FrameTooLarge above the framing's max_size, TypeError for what it cannot carry,
        WriteLimitExceeded past write_limit; in each case nothing is queued."""
        self._queue(self._encoder.encode(payload))

    def send_frames(self, payloads: Iterable[Any]) -> None:
        """Write one frame per payload with one writelines() call; all or nothing (every
        payload is validated, and the write_limit checked, before anything is queued)."""
        # The hot path of every framed server: _limits.queue_buffers written out here, with
        # the size of the common one-buffer result taken directly (one Python call less).
        buffers = self._encoder.encode_many(payloads)
        transport = self.transport
        size = len(buffers[0]) if len(buffers) == 1 else sum(map(len, buffers))
        pending = transport.get_write_buffer_size()
        if pending + size > self._write_limit:
            raise WriteLimitExceeded(size, pending, self._write_limit)
        transport.writelines(buffers)
        if UNPAUSING is not None:
            pause_after_writelines(transport)

    def _queue(self, buffers: list[Any]) -> None:
        queue_buffers(self.transport, buffers, sum(map(len, buffers)), self._write_limit)

    def pause_reading(self) -> None:
        """Stop reading the transport (frames of the current read are still delivered): no
        frames_received() until resume_reading(), also on a transport that still reads
        (the bytes wait in the buffer)."""
        self._set_paused(True)
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read the transport again after pause_reading(). Frames that came in while paused
        are delivered first, on the next loop iteration (never from inside this call)."""
        self._set_paused(False)
        self.transport.resume_reading()
        if self._held:
            asyncio.get_running_loop().call_soon(self._deliver_held)

    def _set_paused(self, paused: bool) -> None:
        self._reading_paused = paused
        if self._delivery is not None:
            self._delivery.paused = paused

    def _deliver_held(self) -> None:
        if self._reading_paused or not self._held:  # paused again, or delivered by a read already
            return
        self._held = False
        try:
            frames = self._decoder.frames()
        except (FrameTooLarge, FramingError) as exc:
            self._bad_frame(exc)
            return
        self._deliver(frames)
        if self._eof_held and not self._reading_paused:
            self._eof_held = False
            if not self._input_ended:
                self._end_of_input()
            if self.transport is not None:
                self.transport.close()  # what the transport did at EOF had we returned None

    @property
    def buffered(self) -> int:
        """Bytes received and held: the start of a frame not yet complete."""
        return self._decoder.buffered  # type: ignore[no-any-return]
