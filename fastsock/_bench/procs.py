"""Child processes that never outlive the run.

Every child runs in its own process group, optionally pinned to one core (and with its
RLIMIT_NOFILE raised, for the idle-connection measurement), with
PR_SET_PDEATHSIG so the kernel kills it if the runner itself is killed. Live children
are tracked; `kill_all()` runs at exit, on SIGTERM/SIGHUP and after Ctrl-C (the runner's
`guard()`), and kills each child's whole process group, then reaps it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import resource
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Callable, Optional

_LIVE: set[Child] = set()
TICK = 0.5  # waits wake up this often to call `on_tick` (the progress display)
on_tick: Optional[Callable[[], None]] = None


def _tick() -> None:
    if on_tick is not None:
        on_tick()
_PR_SET_PDEATHSIG = 1


def _libc() -> Optional[ctypes.CDLL]:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover
        return None


_LIBC = _libc()


def _child_setup(core: Optional[int], nofile: Optional[int]) -> None:
    """Runs in the child between fork and exec."""
    if _LIBC is not None and hasattr(_LIBC, "prctl"):
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    if nofile is not None:  # up to the hard limit (the runner checked it is enough)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (nofile if hard == resource.RLIM_INFINITY else min(nofile, hard), hard))


class Child:
    """One child process: line-oriented stdout with deadlines, stderr kept in a temp file."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Optional[dict[str, str]] = None,
                 core: Optional[int] = None, nofile: Optional[int] = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.core = core
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  (closed by close(), with the child)
        self._buf = b""
        self._eof = False
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr, env=env,
            start_new_session=True, preexec_fn=lambda: _child_setup(core, nofile), close_fds=True,
        )
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_line(self, deadline: float) -> Optional[str]:
        """The next stdout line (without newline); None at EOF or when `deadline` passes."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            if self._eof:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], min(left, TICK))
            _tick()
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self._eof = True
                break
            self._buf += chunk
        if b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
        elif self._buf:  # last line without newline
            line, self._buf = self._buf, b""
        else:
            return None
        return line.decode("utf-8", "replace").rstrip("\r")

    def expect(self, prefixes: tuple[str, ...], deadline: float) -> Optional[str]:
        """The first stdout line starting with one of `prefixes` (others are skipped)."""
        while True:
            line = self.read_line(deadline)
            if line is None:
                return None
            if line.startswith(prefixes):
                return line

    def wait(self, deadline: float) -> Optional[int]:
        """The exit status, or None if the child is still running at `deadline`."""
        while True:
            left = deadline - time.monotonic()
            try:
                return self.proc.wait(timeout=max(0.0, min(left, TICK)))
            except subprocess.TimeoutExpired:
                _tick()
                if left <= TICK:
                    return None

    def wait_cpu(self, deadline: float) -> tuple[Optional[int], float]:
        """(exit status, CPU seconds the child used: user+sys of all its threads, from
        wait4), or (None, -1.0) if it is still running at `deadline`; -1.0 as the CPU when the
        child was reaped before."""
        while True:
            if self.proc.returncode is not None:
                return self.proc.returncode, -1.0
            try:
                pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            except ChildProcessError:
                return self.proc.poll(), -1.0
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                return self.proc.returncode, usage.ru_utime + usage.ru_stime
            if time.monotonic() >= deadline:
                return None, -1.0
            time.sleep(0.01)
            _tick()

    def read_all(self, deadline: float) -> Optional[str]:
        """Every stdout line until EOF, joined; None if `deadline` passes first."""
        lines: list[str] = []
        while True:
            line = self.read_line(deadline)
            if line is None:
                return "\n".join(lines) if self._eof else None
            lines.append(line)

    def running(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, limit: int = 400) -> str:
        try:
            self._stderr.seek(0)
            data = self._stderr.read()
        except (OSError, ValueError):
            return ""
        return data.decode("utf-8", "replace").strip()[-limit:]

    def terminate(self, grace: float = 1.0) -> Optional[int]:
        """SIGTERM the group, wait up to `grace` s, then SIGKILL; always reaps."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def kill(self) -> Optional[int]:
        """SIGKILL the child's process group and reap it."""
        self._signal(signal.SIGKILL)
        try:
            status = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            status = None
        self.close()
        return status

    def _signal(self, sig: int) -> None:
        if self.proc.returncode is not None:
            return  # reaped: its pid (and group id) may belong to someone else now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)  # the child leads its own group (start_new_session)

    def close(self) -> None:
        _LIVE.discard(self)
        for f in (self.proc.stdout, self._stderr):
            with contextlib.suppress(OSError):
                if f is not None:
                    f.close()


def kill_all() -> None:
    """Kill and reap every live child (their whole process groups)."""
    for child in list(_LIVE):
        child.kill()


def live_pids() -> list[int]:
    """Pids of the children still tracked (for tests)."""
    return [c.pid for c in _LIVE]


atexit.register(kill_all)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """SIGTERM and SIGHUP behave like Ctrl-C; whatever happens, every child is killed on exit."""
    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            old[sig] = signal.signal(sig, _raise_interrupt)
    try:
        yield
    finally:
        kill_all()
        for sig, handler in old.items():
            signal.signal(sig, handler)
