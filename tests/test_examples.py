"""Every script in examples/ runs to completion on both backends and prints what it says."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tempfile

import pytest
from sockutil import subprocess_env

EXAMPLES = sorted((pathlib.Path(__file__).resolve().parent.parent / "examples").glob("*.py"))
EXPECTED = {
    "echo_frames": "NOT MESSAGES",
    "partial_progress": "peer left after 9 of 100 bytes",
    "selector_echo": "20 clients echoed",
    "framed_rpc_server": "rpc self-test passed",
    "worker_pool_server": "66 replies, 60 of them from the pool",
}
#: Servers that run until stopped: each is driven by real clients in its own test file.
SERVERS = {"resp_server": "test_example_resp.py", "http_server": "test_example_http.py"}
SELF_TESTS = [p for p in EXAMPLES if p.stem not in SERVERS]


def test_every_example_is_checked():
    here = pathlib.Path(__file__).resolve().parent
    servers = [name for name, test in SERVERS.items() if (here / test).exists()]
    assert sorted(p.stem for p in EXAMPLES) == sorted([*EXPECTED, *servers])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("example", SELF_TESTS, ids=[p.stem for p in SELF_TESTS])
def test_example_runs(impl, example):
    env = subprocess_env("1" if impl.__name__ == "fastsock._py" else "0")
    proc = subprocess.run([sys.executable, str(example)], env=env, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert EXPECTED[example.stem] in proc.stdout
