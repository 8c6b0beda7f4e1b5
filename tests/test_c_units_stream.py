"""Builds and runs the plain-C unit tests of the stream's C layer (src_c/fs_buffer, fs_frame).

Each test compiles tests/c/test_<name>.c with its source under -std=c11 -Wall -Wextra -Werror
(with AddressSanitizer/UBSan when the compiler has them) and runs the binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src_c"
CC = os.environ.get("CC", "gcc")
FLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1", f"-I{SRC}"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]


def _compile(out: Path, sources: list[Path], extra: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [CC, *FLAGS, *extra, *map(str, sources), "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def build_and_run(name: str, sources: list[str], tmp_path: Path) -> str:
    """Compile tests/c/<name>.c with src_c/<sources> and run it; returns its stdout."""
    if shutil.which(CC) is None:
        pytest.fail(f"C compiler {CC!r} not found (set CC)")
    files = [ROOT / "tests" / "c" / f"{name}.c", *(SRC / s for s in sources)]
    exe = tmp_path / name
    built = _compile(exe, files, SANITIZE)
    if built.returncode != 0 and "sanitize" in built.stderr:
        built = _compile(exe, files, [])  # a toolchain without the sanitizer runtimes
    assert built.returncode == 0, built.stderr
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1")
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.mark.c_only
@pytest.mark.timeout(180)
def test_fs_buffer_c_units(tmp_path: Path) -> None:
    assert "all passed" in build_and_run("test_fs_buffer", ["fs_buffer.c"], tmp_path)


@pytest.mark.c_only
@pytest.mark.timeout(180)
def test_fs_frame_c_units(tmp_path: Path) -> None:
    assert "all passed" in build_and_run("test_fs_frame", ["fs_frame.c"], tmp_path)
