"""The backend fastsock.aio runs on.

`impl` is the module whose `FrameDecoder` and `FrameEncoder` every protocol and Stream of
fastsock.aio uses: `fastsock._backend.impl` (the compiled module, or the pure package). It is
read when each protocol is made, never cached elsewhere, so the tests run fastsock.aio on
either backend by patching this one attribute.
"""

from __future__ import annotations

from types import ModuleType

from .._backend import impl as _active

__all__ = ["impl"]

impl: ModuleType = _active
