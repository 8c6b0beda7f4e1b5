"""The build fails loudly: a compile error stops the install with a message naming
FASTSOCK_NO_EXTENSIONS=1, never a silent fallback to the pure backend."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # whole builds in a temp dir: once per CI run is enough


def source_tree(dest: pathlib.Path) -> None:
    """What a build needs, copied without any compiled or generated file."""
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src_c", dest / "src_c")
    shutil.copytree(ROOT / "fastsock", dest / "fastsock",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__", "_speedups.c", "*.html"))


@pytest.mark.c_only
@pytest.mark.timeout(300)
def test_failed_compile_names_the_way_out(tmp_path):
    source_tree(tmp_path)
    env = dict(os.environ, CC="false")  # a "compiler" that always fails
    env.pop("FASTSOCK_NO_EXTENSIONS", None)
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=280)
    assert proc.returncode != 0
    assert "FASTSOCK_NO_EXTENSIONS=1" in proc.stdout + proc.stderr
    assert not list((tmp_path / "fastsock" / "_c").glob("*.so"))


def test_no_extensions_build_compiles_nothing(tmp_path):
    source_tree(tmp_path)
    env = dict(os.environ, CC="false", FASTSOCK_NO_EXTENSIONS="1")  # nothing may be compiled
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not list((tmp_path / "fastsock" / "_c").glob("*.so"))
