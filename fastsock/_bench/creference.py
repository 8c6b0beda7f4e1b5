"""The C reference: compile the programs in fastsock/_bench/c/ with the system compiler, once.

Binaries are cached in ~/.cache/fastsock-bench/<hash>/ (or $FASTSOCK_BENCH_CACHE), where the
hash covers the sources, the compiler's identity and the flags, so an edit or a new compiler
rebuilds. Without a compiler the C rows are skipped with a note, never an error.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

SOURCE_DIR = Path(__file__).with_name("c")
PROGRAMS = ("w1", "w2", "w3", "w4", "w5")
CFLAGS = ["-O2", "-std=c11", "-D_GNU_SOURCE"]


@dataclass
class CReference:
    """Paths of the compiled programs, or why there are none."""

    binaries: dict[str, str] = field(default_factory=dict)
    compiler: str = ""
    compiler_version: str = ""
    note: str = ""

    def binary(self, workload: str) -> Optional[str]:
        return self.binaries.get(workload.lower())


def find_compiler() -> Optional[str]:
    """$CC, else cc, gcc or clang on PATH."""
    for name in (os.environ.get("CC", ""), "cc", "gcc", "clang"):
        if name:
            path = shutil.which(name.split()[0])
            if path:
                return path
    return None


def cache_root() -> Path:
    env = os.environ.get("FASTSOCK_BENCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastsock-bench"


def _version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=20)
        return out.stdout.splitlines()[0].strip() if out.stdout else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def build(programs: tuple[str, ...] = PROGRAMS) -> CReference:
    """Compile (or find cached) reference programs; never raises for a missing or failing compiler."""
    cc = find_compiler()
    if cc is None:
        return CReference(note="no C compiler found (set CC or install cc): C reference rows skipped")
    version = _version(cc)
    digest = hashlib.sha256()
    for src in sorted(SOURCE_DIR.iterdir()):
        if src.suffix in (".c", ".h"):
            digest.update(src.name.encode() + b"\0" + src.read_bytes())
    digest.update(f"{cc}\0{version}\0{' '.join(CFLAGS)}".encode())
    outdir = cache_root() / digest.hexdigest()[:16]
    ref = CReference(compiler=cc, compiler_version=version)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        ref.note = f"cannot create the cache directory {outdir} ({exc}): C reference rows skipped"
        return ref
    errors = []
    for prog in programs:
        target = outdir / prog
        if not target.exists():
            # compile to a temporary name, then rename: concurrent runs never see half a binary
            fd, tmp = tempfile.mkstemp(dir=outdir, prefix=f".{prog}.")
            os.close(fd)
            cmd = [cc, *CFLAGS, "-o", tmp, str(SOURCE_DIR / f"{prog}.c")]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.SubprocessError) as exc:
                proc = None
                errors.append(f"{prog}: {exc}")
            if proc is not None and proc.returncode != 0:
                errors.append(f"{prog}: {proc.stderr.strip()[-500:]}")
            if proc is None or proc.returncode != 0:
                os.unlink(tmp)
                continue
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)
        ref.binaries[prog] = str(target)
    if errors:
        ref.note = "C reference compile failed for " + "; ".join(errors)
    return ref
