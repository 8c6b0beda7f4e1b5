"""Valgrind memcheck over the plain-C unit tests of tests/c/ (no Python inside).

Each test is built as tests/test_c_units.py builds it (every src_c/*.c, -I src_c, -Wall
-Wextra -Werror) but WITHOUT the sanitizers, which cannot run under valgrind, at -O1 -g, with
src_c's assertions on (as FASTSOCK_DEBUG=1 builds), and run under memcheck. Each process
writes its own log (valgrind follows fork): the test's own process must have no error at all
(no invalid read or write, no use of uninitialised memory, no bad free, no definite leak), and
the children check_aborts() forks must have no memory error either; their leaks are not
counted, since they die on purpose of an assertion in the middle of an operation.

`make valgrind` runs this file. Skipped, saying why, where valgrind is not installed.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
C_TESTS = sorted((ROOT / "tests" / "c").glob("test_*.c"))
SOURCES = sorted((ROOT / "src_c").glob("*.c"))
FLAGS = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-UNDEBUG"]
MEMCHECK = ["--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite",
            "--errors-for-leak-kinds=definite", "--track-origins=yes", "--error-exitcode=99",
            "--num-callers=30"]
#: The headline of every memcheck error other than a leak record.
MEMORY_ERROR = re.compile(
    r"Invalid (read|write|free)|Mismatched free|uninitialised|Syscall param|"
    r"Source and destination overlap|Argument '.*' of function|fishy|Jump to the invalid address"
)
#: One failed CHECK of a C test: "file:line: CHECK(...) failed" (or "file:line [context]: ...").
FAILED_CHECK = re.compile(r"^(\S+?):(\d+)(?: \[[^]]*\])?: CHECK\(.*\) failed$", re.M)
#: Test functions whose CHECKs cannot hold under valgrind (tests/test_c_units.py runs them
#: natively): valgrind emulates RLIMIT_NOFILE, and closes a descriptor accept() returns above
#: the lowered limit itself, so the connection that the kernel keeps in the backlog during
#: test_emfile_backoff's EMFILE is lost under valgrind.
VALGRIND_INCOMPATIBLE = {"test_fs_server": ["test_emfile_backoff"]}
DEFINITELY_LOST = re.compile(r"definitely lost: ([\d,]+) bytes")
ERROR_SUMMARY = re.compile(r"ERROR SUMMARY: (\d+) errors")

#: What a sanitizer run (`make asan`) puts in the environment: valgrind cannot run a program
#: with the ASan runtime preloaded.
SANITIZER_VARS = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC")

# slow: the C code alone under valgrind (tens of times slower than native): one run per CI
pytestmark = [pytest.mark.c_only, pytest.mark.slow, pytest.mark.timeout(300)]


def _function_lines(source: pathlib.Path, name: str) -> range:
    """The lines of the C function `static void name(void)` in `source`."""
    lines = source.read_text().splitlines()
    start = lines.index(f"static void {name}(void)")
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    return range(start + 1, end + 2)


def _unexpected_failures(source: pathlib.Path, stderr: str) -> list[str]:
    """The failed CHECKs of the run outside VALGRIND_INCOMPATIBLE's functions."""
    allowed = [_function_lines(source, name) for name in VALGRIND_INCOMPATIBLE.get(source.stem, [])]
    return [m.group(0) for m in FAILED_CHECK.finditer(stderr)
            if not any(int(m.group(2)) in lines for lines in allowed)]


def _valgrind() -> str:
    exe = shutil.which("valgrind")
    if exe is None:
        reason = "valgrind is not installed here (Debian: apt-get install valgrind); memcheck not run"
        print(reason)
        pytest.skip(reason)
    return exe


@pytest.mark.parametrize("source", C_TESTS, ids=[p.stem for p in C_TESTS])
def test_memcheck_c_unit(source, tmp_path):
    valgrind = _valgrind()
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to build the C unit tests"
    env = {k: v for k, v in os.environ.items() if k not in SANITIZER_VARS}
    exe = tmp_path / source.stem
    build = subprocess.run([cc, *FLAGS, "-I", str(ROOT / "src_c"), "-I", str(ROOT / "tests" / "c"), str(source),
                            *map(str, SOURCES), "-o", str(exe)], capture_output=True, text=True, env=env)
    assert build.returncode == 0, build.stderr
    logs = tmp_path / "logs"
    logs.mkdir()
    # cwd: a vgcore file from an expected abort in a check_aborts() child stays in tmp_path.
    proc = subprocess.Popen([valgrind, *MEMCHECK, f"--log-file={logs}/vg.%p", str(exe)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=280)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    main_log = logs / f"vg.{proc.pid}"
    assert main_log.exists(), sorted(p.name for p in logs.iterdir())
    text = main_log.read_text()
    # Exit 1 with failed CHECKs only where valgrind changes what the kernel does; never 99
    # (a memcheck error), a signal, or a REQUIRE giving up.
    unexpected = _unexpected_failures(source, err)
    assert not unexpected and "giving up" not in err, f"{out}\n{err}"
    assert proc.returncode == (0 if "all passed" in out else 1), f"exit {proc.returncode}\n{out}\n{err}\n{text}"
    summary = ERROR_SUMMARY.search(text)
    assert summary and summary.group(1) == "0", text
    lost = DEFINITELY_LOST.search(text)  # absent when every block was freed
    assert lost is None or lost.group(1) == "0", text
    assert not MEMORY_ERROR.search(text), text
    children = [p for p in logs.iterdir() if p != main_log]
    for child in children:
        child_text = child.read_text()
        assert not MEMORY_ERROR.search(child_text), f"{child.name} (a forked child):\n{child_text}"
    skipped = len(FAILED_CHECK.findall(err))
    print(f"{source.stem}: memcheck clean ({len(children)} forked children checked too)"
          + (f"; {skipped} CHECK(s) of {VALGRIND_INCOMPATIBLE[source.stem]} failed as expected under valgrind"
             if skipped else ""))
