"""Builds and runs every plain-C unit test in tests/c/ (fs_io, fs_buffer, fs_frame, fs_poll) against src_c/ (no Python inside),
with -Wall -Wextra -Werror, so src_c stays warning-free and testable on its own."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
C_TESTS = sorted((ROOT / "tests" / "c").glob("test_*.c"))
CFLAGS = ["-std=c11", "-D_GNU_SOURCE", "-O1", "-g", "-Wall", "-Wextra", "-Werror",
          "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]

pytestmark = [pytest.mark.c_only, pytest.mark.timeout(120)]


@pytest.mark.parametrize("source", C_TESTS, ids=[p.stem for p in C_TESTS])
def test_c_unit(source, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to build the extension and its unit tests"
    exe = tmp_path / source.stem
    sources = [str(p) for p in sorted((ROOT / "src_c").glob("*.c"))]
    build = subprocess.run([cc, *CFLAGS, "-I", str(ROOT / "src_c"), str(source), *sources, "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=100, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
