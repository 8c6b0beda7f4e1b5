"""M1 idle connections: the servers whose memory per idle connection is measured.

They are the servers of W4 (stdlib selectors, asyncio and uvloop Protocol: echo servers;
an idle connection never sends a byte, so what they would do with one does not matter) and
W5's fastsock.Server (framed, per-frame handler: the Server's common use). The load
generator (pyclient.m1) opens the connections and reads this server's VmRSS and descriptor
count from /proc, so the servers report nothing themselves; the runner raises their
RLIMIT_NOFILE to hold every connection.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from . import w4, w5

SERVERS: dict[str, Callable[..., Any]] = {
    "stdlib-best": w4.SERVERS["stdlib-best"],
    "asyncio-protocol": w4.SERVERS["asyncio-protocol"],
    "uvloop-protocol": w4.SERVERS["uvloop-protocol"],
    "fastsock-server": w5.SERVERS["fastsock-server"],
    "fastsock-server-pure": w5.SERVERS["fastsock-server-pure"],
}


def missing(key: str) -> Optional[str]:
    """Why `key` cannot run here, or None."""
    return w5.missing(key)
