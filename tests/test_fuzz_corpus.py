"""Replays the committed fuzz corpora without libFuzzer: every target tests/fuzz/fuzz_<name>.c
is built with the ordinary C compiler from itself, the other .c files in tests/fuzz/ (shared
property checks and replay_main.c's main()) and src_c/*.c, with the C unit tests' warnings
(-Wall -Wextra -Werror) and ASan/UBSan and src_c's assertions live, then run once on every
input of tests/fuzz/corpus/<name>/: the hand-made seeds, the inputs the fuzzer found
interesting, and the inputs of past findings, so a finding stays fixed in every CI run.
`make fuzz` runs the same targets under libFuzzer (clang) to look for new inputs.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FUZZ = ROOT / "tests" / "fuzz"
CORPUS = FUZZ / "corpus"
TARGETS = sorted(FUZZ.glob("fuzz_*.c"))
HELPERS = sorted(p for p in FUZZ.glob("*.c") if not p.name.startswith("fuzz_"))
SOURCES = sorted((ROOT / "src_c").glob("*.c"))
# As tests/test_c_units.py builds the C unit tests, in its debug mode (assertions live).
WARNINGS = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror"]
SANITIZERS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
FLAGS = [*WARNINGS, "-O1", "-g", "-UNDEBUG", *SANITIZERS, "-I", str(ROOT / "src_c"), "-I", str(FUZZ)]
ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
# What a committed corpus may hold (the brief of issue 13: small, minimized).
MAX_FILES = 300
MAX_BYTES = 1 << 20

# slow: the C code alone, whatever the interpreter: one job's run is enough
pytestmark = [pytest.mark.c_only, pytest.mark.slow, pytest.mark.timeout(300)]


def _cc() -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to build the extension and its unit tests"
    return cc


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """src_c/*.c and the shared helpers, compiled once for every target."""
    out = tmp_path_factory.mktemp("fuzz-objects")
    objs = []
    for source in [*SOURCES, *HELPERS]:
        obj = out / f"{source.parent.name}-{source.stem}.o"
        build = subprocess.run([_cc(), *FLAGS, "-c", str(source), "-o", str(obj)], capture_output=True, text=True)
        assert build.returncode == 0, build.stderr
        objs.append(str(obj))
    return objs


def _build(source: pathlib.Path, objects: list[str], exe: pathlib.Path) -> None:
    build = subprocess.run([_cc(), *FLAGS, str(source), *objects, "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr


def _replay(exe: pathlib.Path, *inputs: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), *map(str, inputs)], capture_output=True, text=True, timeout=120, env=ENV)


def test_every_target_has_a_corpus_and_every_corpus_a_target():
    assert TARGETS, "no fuzz target in tests/fuzz/"
    assert {p.stem for p in TARGETS} == {p.name for p in CORPUS.iterdir() if p.is_dir()}


@pytest.mark.parametrize("source", TARGETS, ids=[p.stem for p in TARGETS])
def test_corpus_replays(source, objects, tmp_path):
    corpus = CORPUS / source.stem
    files = [p for p in corpus.iterdir() if p.is_file() and not p.name.startswith(".")]
    assert files, f"{corpus} is empty"
    assert len(files) <= MAX_FILES, f"{corpus}: {len(files)} files; minimize it (-merge=1)"
    assert sum(p.stat().st_size for p in files) <= MAX_BYTES, f"{corpus} holds more than 1 MiB"
    exe = tmp_path / source.stem
    _build(source, objects, exe)
    run = _replay(exe, corpus)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"replayed {len(files)} inputs" in run.stdout, run.stdout  # every file ran


CANARY = """
#include "fuzz.h"
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FZ_CHECK(size != 3);                   /* a 3-byte input breaks a property */
    return size == 5 ? data[size] : 0;     /* a 5-byte one reads past its end */
}
"""


@pytest.mark.parametrize(("size", "says"), [(3, "property failed: size != 3"), (5, "heap-buffer-overflow")])
def test_replay_reports_a_failed_property_and_a_read_past_the_input(size, says, objects, tmp_path):
    """The replay build fails loudly on what the fuzzer would report (so a corpus replay
    that passes means something): a failed FZ_CHECK, and a read one byte past the input."""
    source = tmp_path / "fuzz_canary.c"
    source.write_text(CANARY)
    exe = tmp_path / "fuzz_canary"
    _build(source, objects, exe)
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_bytes(b"ok")
    bad.write_bytes(b"x" * size)
    assert _replay(exe, good).returncode == 0
    run = _replay(exe, good, bad)
    assert run.returncode != 0
    assert says in run.stderr, run.stderr


def test_replay_refuses_to_run_nothing(objects, tmp_path):
    """An empty corpus directory is an error, not a pass."""
    source = tmp_path / "fuzz_empty.c"
    source.write_text('#include "fuzz.h"\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)'
                      "\n{\n    (void)d;\n    (void)n;\n    return 0;\n}\n")
    exe = tmp_path / "fuzz_empty"
    _build(source, objects, exe)
    empty = tmp_path / "corpus"
    empty.mkdir()
    run = _replay(exe, empty)
    assert run.returncode == 2, run.stdout + run.stderr
