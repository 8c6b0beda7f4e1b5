"""`fastsock info`: the backend, the poller in use, and the kernel features fastsock can use."""

from __future__ import annotations

import ctypes
import platform
import select
import socket
import sys
from typing import Any

TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)  # Linux value when Python lacks the name


def _sockopt(level: int, opt: int, value: int = 1) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(level, opt, value)
        return True
    except OSError:
        return False


def _libc_has(name: str) -> bool:
    try:
        return hasattr(ctypes.CDLL(None), name)
    except OSError:
        return False


def poller_name() -> str:
    """What fastsock.Poller uses (its own answer when it gives one, else the platform's best)."""
    import fastsock

    poller_cls = getattr(fastsock, "Poller", None)
    if poller_cls is not None:
        for attr in ("method", "backend", "kind", "name"):
            value = getattr(poller_cls, attr, None)
            if isinstance(value, str):
                return value
        try:
            p = poller_cls()
            for attr in ("method", "backend", "kind", "name"):
                value = getattr(p, attr, None)
                if isinstance(value, str):
                    return value
            if hasattr(p, "close"):
                p.close()
        except Exception:
            pass
    best = "epoll" if hasattr(select, "epoll") else "kqueue" if hasattr(select, "kqueue") else \
        "poll" if hasattr(select, "poll") else "select"
    suffix = "" if poller_cls is not None else " (fastsock.Poller not available yet; the platform's best)"
    return best + suffix


def features() -> dict[str, bool]:
    """Kernel and platform features fastsock uses when present."""
    so_reuseport = getattr(socket, "SO_REUSEPORT", None)
    return {
        "epoll": hasattr(select, "epoll"),
        "poll": hasattr(select, "poll"),
        "MSG_WAITALL": hasattr(socket, "MSG_WAITALL"),
        "MSG_NOSIGNAL": hasattr(socket, "MSG_NOSIGNAL"),
        "writev (sendmsg gather)": hasattr(socket.socket, "sendmsg"),
        "sendmmsg": _libc_has("sendmmsg"),
        "SO_REUSEPORT": so_reuseport is not None and _sockopt(socket.SOL_SOCKET, so_reuseport),
        "SO_RCVLOWAT": _sockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1),
        "TCP_NODELAY": _sockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
        "TCP_NOTSENT_LOWAT": sys.platform.startswith("linux")
        and _sockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, 16384),
        "TCP_KEEPIDLE": hasattr(socket, "TCP_KEEPIDLE") and _sockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60),
        "IPv6": socket.has_ipv6,
    }


def describe() -> dict[str, Any]:
    import fastsock

    detected = getattr(fastsock, "FEATURES", None)  # fastsock's own detection, when it has one
    return {
        "fastsock": fastsock.__version__,
        "backend": fastsock.BACKEND,
        "poller": poller_name(),
        "poll_methods": list(getattr(fastsock, "POLL_METHODS", ())),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "features": dict(detected) if isinstance(detected, dict) else features(),
    }


def render(d: dict[str, Any]) -> str:
    lines = [f"fastsock {d['fastsock']}", f"backend:  {d['backend']}" + (
        "  (pure Python: FASTSOCK_PURE=1 or no compiled extension)" if d["backend"] == "python" else "  (compiled)"),
        f"poller:   {d['poller']}"
        + (f"  (available: {', '.join(d['poll_methods'])})" if d.get("poll_methods") else ""),
        f"python:   {d['python']}", f"platform: {d['platform']}", "features:"]
    for name, ok in d["features"].items():
        lines.append(f"  {'yes' if ok else 'no ':3}  {name}")
    return "\n".join(lines)
