"""Helpers for Stream tests: connected stream pairs on every transport, on either backend."""

from __future__ import annotations

import socket as stdsocket
from types import ModuleType
from typing import Any

import pytest
from sockutil import TRANSPORTS, Peer, has_ipv6_loopback, make_pair, small_buffers  # noqa: F401


def transports() -> list[Any]:
    """unix, tcp4, and tcp6 where ::1 exists (a skip mark otherwise, with the reason)."""
    out: list[Any] = []
    for t in TRANSPORTS:
        if t == "tcp6" and not has_ipv6_loopback():
            out.append(pytest.param(t, marks=pytest.mark.skip(reason="no IPv6 loopback on this host")))
        else:
            out.append(t)
    return out


def stream_pair(impl: ModuleType, transport: str = "unix", framing: Any = None, **options: Any) -> tuple[Any, Any]:
    """Two connected Streams (a, b) over `transport`, both with `framing` and `options`."""
    a, b = make_pair(impl, transport)
    return impl.Stream(a, framing=framing, **options), impl.Stream(b, framing=framing, **options)


def raw_pair(impl: ModuleType, transport: str = "unix") -> tuple[Any, stdsocket.socket]:
    """A Stream (no framing) and the raw socket of its peer, to write hand-made bytes."""
    a, b = make_pair(impl, transport)
    return impl.Stream(a), b


ALL_FRAMINGS = [
    ("LengthPrefix(4,big)", lambda impl: impl.LengthPrefix()),
    ("LengthPrefix(1,big)", lambda impl: impl.LengthPrefix(1)),
    ("LengthPrefix(2,little)", lambda impl: impl.LengthPrefix(2, "little")),
    ("LengthPrefix(8,little)", lambda impl: impl.LengthPrefix(8, "little")),
    ("Varint", lambda impl: impl.Varint()),
    ("Delimiter(\\n)", lambda impl: impl.Delimiter(b"\n")),
    ("Delimiter(\\r\\n)", lambda impl: impl.Delimiter(b"\r\n")),
    ("Delimiter(END!)", lambda impl: impl.Delimiter(b"END!")),
    ("AsciiLength(5)", lambda impl: impl.AsciiLength()),
    ("Netstring", lambda impl: impl.Netstring()),
]
