"""Builds and runs every plain-C unit test in tests/c/ (fs_io, fs_buffer, fs_frame, fs_poll) against
src_c/ (no Python inside), with -Wall -Wextra -Werror and ASan/UBSan, so src_c stays warning-free
and testable on its own.

Each test is built twice, as setup.py builds the extension:
  debug    -O0 -g3 -UNDEBUG: src_c's FS_ASSERT invariant checks are live (FASTSOCK_DEBUG=1), and
           each test also shows that they fire on a corrupted structure (check_aborts in check.h)
  release  -O2 -DNDEBUG: the checks are compiled out; the same tests must pass without them
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
C_TESTS = sorted((ROOT / "tests" / "c").glob("test_*.c"))
SOURCES = sorted((ROOT / "src_c").glob("*.c"))
WARNINGS = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror"]
SANITIZERS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
MODES = {
    "debug": ["-O0", "-g3", "-UNDEBUG"],
    "release": ["-O2", "-g", "-DNDEBUG"],
}

# slow: the C code alone, whatever the interpreter: one job's run is enough
pytestmark = [pytest.mark.c_only, pytest.mark.slow, pytest.mark.timeout(120)]


def _cc() -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to build the extension and its unit tests"
    return cc


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("source", C_TESTS, ids=[p.stem for p in C_TESTS])
def test_c_unit(source, mode, tmp_path):
    exe = tmp_path / source.stem
    build = subprocess.run([_cc(), *WARNINGS, *MODES[mode], *SANITIZERS, "-I", str(ROOT / "src_c"),
                            "-I", str(ROOT / "tests" / "c"), str(source), *map(str, SOURCES), "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=100, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    # The banner names the build the test saw: the modes really differ in NDEBUG.
    assert ("compiled out" in run.stdout) == (mode == "release"), run.stdout


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs nm (binutils) to list undefined symbols")
@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_assertions_exist_only_in_debug_objects(source, tmp_path):
    """Every src_c file calls the C library's assertion handler in a debug build,
    and none does in a release build: the checks cost nothing there."""
    undefined = {}
    for mode, flags in MODES.items():
        obj = tmp_path / f"{source.stem}-{mode}.o"
        build = subprocess.run([_cc(), *WARNINGS, *flags, "-I", str(ROOT / "src_c"), "-c", str(source), "-o", str(obj)],
                               capture_output=True, text=True)
        assert build.returncode == 0, build.stderr
        nm = subprocess.run(["nm", "-u", str(obj)], capture_output=True, text=True, check=True)
        undefined[mode] = {line.split()[-1] for line in nm.stdout.splitlines() if line.strip()}
    def handler(names: set[str]) -> set[str]:  # __assert_fail (glibc), __assert_rtn (macOS), ...
        return {n for n in names if "assert" in n}

    assert not handler(undefined["release"]), undefined["release"]
    assert handler(undefined["debug"]), f"{source.name} has no live assertion in a debug build"
