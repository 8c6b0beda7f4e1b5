"""Progress while the benchmark runs: one updating line on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from typing import Any, Optional, TextIO

from .spec import label


def _fmt_s(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Shows which workload and implementation run, elapsed and estimated remaining time."""

    def __init__(self, stream: TextIO, estimates: list[float], repeat: int) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.estimates = estimates
        self.repeat = repeat
        self.t0 = time.monotonic()
        self.done_estimate = 0.0
        self._width = 0
        self._current: Optional[tuple[int, tuple[Any, str, int]]] = None
        self._task_t0 = self.t0

    def remaining(self, index: int) -> float:
        """Estimated seconds left, with the estimates corrected by how fast the run has gone."""
        now = time.monotonic()
        left = sum(self.estimates[index:])
        if self.done_estimate > 1.0:
            left *= (now - self.t0 - self._in_task(now)) / self.done_estimate
        return max(0.0, left - self._in_task(now))

    def _in_task(self, now: float) -> float:
        """Seconds spent in the run in progress (0 between runs)."""
        return now - self._task_t0 if self._current is not None else 0.0

    def update(self, index: int, task: tuple[Any, str, int], phase: Optional[str]) -> None:
        """Called by the runner before ("start") and after ("done") each run (None: run skipped)."""
        if phase == "done" or phase is None:
            self.done_estimate += self.estimates[index]
        if phase is None:
            return
        self._current = (index, task) if phase == "start" else None
        self._task_t0 = time.monotonic()
        self._show(index, task, phase)

    def tick(self) -> None:
        """Refresh the terminal line while a run is in progress (elapsed time moves on)."""
        if self.tty and self._current is not None:
            self._show(*self._current, "start")

    def _show(self, index: int, task: tuple[Any, str, int], phase: str) -> None:
        case, impl, rep = task
        elapsed = time.monotonic() - self.t0
        name = case.key.replace("-same-core", " same-core")
        what = f"[{index + 1}/{len(self.estimates)}] {name} {label(case.key, impl)} #{rep + 1}/{self.repeat}"
        timing = f"elapsed {_fmt_s(elapsed)}, ~{_fmt_s(self.remaining(index + (phase == 'done')))} left"
        if self.tty:
            text = f"{what}  {timing}"
            pad = max(0, self._width - len(text))
            self._width = len(text)
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
        elif phase == "start":
            self.stream.write(f"{what} ({timing})\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
