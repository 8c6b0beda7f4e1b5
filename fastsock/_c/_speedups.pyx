# cython: language_level=3
"""The compiled backend: one extension module assembled from one .pxi per feature.

Each feature .pxi (socket, stream, poller, server, decoder) holds the wrappers of one part of the API and
defines its own `*_ALL` list; what two of them share lives in _io.pxi only (its contract is at
its top). The C work itself lives in src_c/ (declared in includes/*.pxd).
"""

include "_io.pxi"
include "socket.pxi"
include "stream.pxi"
include "poller.pxi"
include "server.pxi"
include "decoder.pxi"

__all__ = SOCKET_ALL + STREAM_ALL + POLLER_ALL + SERVER_ALL + DECODER_ALL
