"""Every script in examples/ runs to completion on both backends and prints what it says
(the servers among them have their own test files), and the README's fastsock.aio snippets
are excerpts of the examples they name."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import tempfile

import pytest
from sockutil import subprocess_env

ROOT = pathlib.Path(__file__).resolve().parent.parent
ALL = sorted((ROOT / "examples").glob("*.py"))
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


#: The aio examples pick uvloop when it is installed; this runs them on asyncio's own loop too.
AIO_EXAMPLES = [p for p in EXAMPLES if p.stem.startswith("aio_")]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("example", AIO_EXAMPLES, ids=[p.stem for p in AIO_EXAMPLES])
def test_aio_example_runs_on_the_default_loop(impl, example):
    env = subprocess_env("1" if impl.__name__ == "fastsock._py" else "0")
    proc = subprocess.run([sys.executable, str(example), "asyncio"], env=env, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert "event loop: asyncio" in proc.stdout
    assert EXPECTED[example.stem] in proc.stdout


def _code_lines(text: str) -> list[str]:
    """The stripped code lines of a snippet: not blank, not a comment, not an elision (...)."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#") and line != "..."]


def test_readme_aio_snippets_are_excerpts_of_the_examples():
    """Every snippet of the README's "asyncio and uvloop" section names the example it is
    trimmed from (its first line, `# examples/NAME.py ...`), and each of its code lines is a
    line of that file, in the file's order: what the README shows is what test_example_runs
    runs. Comment lines and `...` are the excerpt's own."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## asyncio and uvloop")
    section = readme[start:readme.index("\n## ", start + 1)]
    snippets = re.findall(r"```python\n(.*?)```", section, re.S)
    named = []
    for snippet in snippets:
        match = re.match(r"# (examples/\w+\.py)\b", snippet)
        assert match, f"a README snippet does not name its example: {snippet[:80]!r}"
        named.append(pathlib.Path(match[1]).stem)
        source = iter(_code_lines((ROOT / match[1]).read_text(encoding="utf-8")))
        for line in _code_lines(snippet):
            assert any(line == code for code in source), f"{match[1]}: not found in order: {line!r}"
    assert named == ["aio_echo", "aio_framed_server", "decoder_select"]
