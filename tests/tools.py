"""Real components the protocol, scale and load-balancer tests drive, and the skip marker
for each: `.ci/run` installs them from Debian's packages, and a test whose tool is still
missing skips with the package to install (pytest -rs prints the reason)."""

from __future__ import annotations

import os
import shutil

import pytest

#: command -> the Debian package that provides it (as installed by .ci/run).
PACKAGES = {
    "redis-cli": "redis-tools",
    "redis-benchmark": "redis-tools",
    "redis-server": "redis-server",
    "wrk": "wrk",
    "ab": "apache2-utils",
    "curl": "curl",
    "nginx": "nginx-light",
    "haproxy": "haproxy",
}


def tool(command: str) -> str | None:
    """The path of `command` (PATH, then /usr/sbin, where Debian puts nginx and haproxy)."""
    return shutil.which(command) or shutil.which(command, path="/usr/sbin:/usr/local/sbin")


def needs(*commands: str) -> pytest.MarkDecorator:
    """Skip unless every command is installed, saying which package provides each one."""
    missing = [c for c in commands if tool(c) is None]
    reason = "; ".join(f"{c} is not installed (Debian package {PACKAGES.get(c, c)})" for c in missing)
    return pytest.mark.skipif(bool(missing), reason=reason or "all installed")


def tool_env() -> dict[str, str]:
    """The environment for one of these tools: without what a sanitizer run (`make asan`)
    preloads, which is for the interpreter (curl hangs with libasan preloaded)."""
    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}
