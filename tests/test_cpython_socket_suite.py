"""CPython's own socket test suite is the standard fastsock.socket is held to: it must pass
with `socket.socket` replaced by fastsock's, on both backends."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import tempfile

import pytest
from sockutil import subprocess_env

SCRIPT = pathlib.Path(__file__).with_name("cpython_socket_suite.py")

# CPython ships its own test suite as the `test` package; PyPy and some distributions do not.
pytest.importorskip("test.test_socket", reason="this interpreter does not ship CPython's test.test_socket "
                    "(PyPy, or a distribution without the test package)")


@pytest.mark.slow  # 40 s per backend: run by the main, pure and debug jobs
@pytest.mark.timeout(600)
def test_cpython_socket_suite_passes(impl):
    env = subprocess_env("1" if impl.__name__ == "fastsock._py" else "0")
    proc = subprocess.run([sys.executable, str(SCRIPT)], env=env, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, timeout=580)
    match = re.search(r"RESULT run=(\d+) failures=(\d+) errors=(\d+) skipped=(\d+) backend=(\w+)", proc.stdout)
    assert match, proc.stdout + proc.stderr[-5000:]
    run, failures, errors, _skipped, backend = match.groups()
    assert backend == ("python" if env["FASTSOCK_PURE"] == "1" else "c")
    assert int(run) > 600
    assert (int(failures), int(errors)) == (0, 0), proc.stderr[-8000:]
    assert proc.returncode == 0
