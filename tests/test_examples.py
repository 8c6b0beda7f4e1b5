"""Every script in examples/ runs to completion on both backends and prints what it says
(the servers among them have their own test files)."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tempfile

import pytest
from sockutil import subprocess_env

ALL = sorted((pathlib.Path(__file__).resolve().parent.parent / "examples").glob("*.py"))
#: Examples that serve until stopped, driven by their own test files instead.
SERVERS = {"http_server": "test_example_http.py", "resp_server": "test_example_resp.py"}
EXAMPLES = [p for p in ALL if p.stem not in SERVERS]
EXPECTED = {
    "echo_frames": "NOT MESSAGES",
    "partial_progress": "peer left after 9 of 100 bytes",
    "selector_echo": "20 clients echoed",
    "framed_rpc_server": "rpc self-test passed",
    "worker_pool_server": "66 replies, 60 of them from the pool",
    # issue 12 (README "asyncio and uvloop"): on uvloop where it is installed, else asyncio's loop
    "aio_echo": "10 clients, 2000 frames echoed",
    "aio_framed_server": "8 clients, 24016 pipelined requests answered",
    "decoder_select": "8 clients' frames decoded by hand, 1 cut mid-frame",
}


def test_every_example_is_checked():
    assert sorted(p.stem for p in ALL) == sorted([*EXPECTED, *SERVERS])
    here = pathlib.Path(__file__).resolve().parent
    assert all((here / test).is_file() for test in SERVERS.values())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(impl, example):
    env = subprocess_env("1" if impl.__name__ == "fastsock._py" else "0")
    proc = subprocess.run([sys.executable, str(example)], env=env, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert EXPECTED[example.stem] in proc.stdout
