"""The differential fuzzer (tests/fuzz/differential/fuzz_decoders.py, atheris) for a short,
bounded run on its committed corpus: the compiled and the pure FrameDecoder agree on every
input it makes (frames, exceptions and their attributes, bytes left buffered). `make fuzz`
runs it longer; its figures are in the README's reliability section."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import pytest
from sockutil import subprocess_env

HERE = pathlib.Path(__file__).resolve().parent / "fuzz" / "differential"

# slow: main runs it (a few seconds), the other jobs need not repeat it
pytestmark = [pytest.mark.c_only, pytest.mark.slow, pytest.mark.timeout(120)]


def test_compiled_and_pure_decoders_agree_under_the_fuzzer(tmp_path):
    if importlib.util.find_spec("atheris") is None:
        reason = ("atheris is not installed here (the test extra installs it on CPython 3.11+, "
                  "Linux x86_64: its current releases have wheels only there); "
                  "the differential fuzzer cannot run")
        print(reason)
        pytest.skip(reason)
    work = tmp_path / "corpus"  # new inputs go here; the committed corpus is only read
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, str(HERE / "fuzz_decoders.py"), str(work), str(HERE / "corpus"), "-runs=5000",
         f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        env=subprocess_env("0"), capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Done 5000 runs" in proc.stderr, proc.stderr[-2000:]
