"""The pure-Python backend: the same API as the compiled `fastsock._c._speedups`."""

from __future__ import annotations

from . import decoder as _decoder_mod
from . import poller as _poller_mod
from . import server as _server_mod
from . import socket as _socket_mod
from . import stream as _stream_mod
from .decoder import *
from .decoder import _FrameDelivery  # fastsock.aio.FramedProtocol's read path
from .poller import *
from .server import *
from .socket import *
from .stream import *

__all__: list[str] = []
__all__ += _socket_mod.__all__
__all__ += _stream_mod.__all__
__all__ += _poller_mod.__all__
__all__ += _server_mod.__all__
__all__ += _decoder_mod.__all__
