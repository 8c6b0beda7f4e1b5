"""fastsock: socket I/O as easy as the standard `socket` module and as fast as C.

`import fastsock as socket` works for ordinary socket code: every public name of the
standard `socket` module is re-exported, and `socket`, `SocketType`, `create_connection`,
`create_server`, `socketpair` and `fromfd` return fastsock sockets, whose send/recv
loops run in C (or in the pure-Python twin, see `BACKEND`).
"""

from __future__ import annotations

import socket as _stdsocket
from socket import *  # the drop-in: every constant, exception and helper of the socket module
from typing import TYPE_CHECKING

from ._backend import BACKEND
from ._backend import impl as _impl
from ._errors import FrameTooLarge, IncompleteReadError

if TYPE_CHECKING:
    # Type checkers see the pure twin; the compiled module has the same API (see _c/_speedups.pyi).
    from ._py import *
else:
    globals().update({_name: getattr(_impl, _name) for _name in _impl.__all__})

__version__ = "0.1.0"

__all__ = [
    *_stdsocket.__all__,
    *(_name for _name in _impl.__all__ if _name not in _stdsocket.__all__),
    "BACKEND",
    "IncompleteReadError",
    "FrameTooLarge",
]
