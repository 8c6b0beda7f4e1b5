"""The machine description printed with every result: CPU, cores, kernel, Python, library versions."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from typing import Any, Optional


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def fastsock_backend(pure: bool) -> dict[str, Any]:
    """fastsock's version and backend as a child with/without FASTSOCK_PURE sees it."""
    env = dict(os.environ, FASTSOCK_PURE="1" if pure else "")
    code = "import fastsock,json;print(json.dumps([fastsock.__version__, fastsock.BACKEND]))"
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
        import json

        ver, backend = json.loads(out.stdout)
        return {"version": ver, "backend": backend}
    except Exception as exc:
        return {"version": None, "backend": None, "error": str(exc)}


def describe(compiler_version: str = "") -> dict[str, Any]:
    """Everything a reader needs to compare these figures with their own."""
    import fastsock

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count() or 1
    libs = {
        "fastsock": fastsock.__version__,
        "fastsock backend": fastsock.BACKEND,
        "uvloop": _version("uvloop"),
        "gevent": _version("gevent"),
        "asyncio": f"stdlib (Python {platform.python_version()})",
    }
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "compiler": compiler_version or None,
        "libraries": libs,
    }


def one_line(m: dict[str, Any]) -> str:
    """The description as one line of text."""
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v and k != "asyncio")
    return (f"{m['cpu']}, {m['usable_cores']} cores usable ({m['cores']} online), {m['kernel']}, "
            f"{m['python']}; {libs}" + (f"; C: {m['compiler']}" if m.get("compiler") else "") + f"; {m['date']}")
