"""Build script: one Cython extension over plain C, or the pure-Python package only.

Environment switches (read at build time):
  FASTSOCK_NO_EXTENSIONS=1  install the pure-Python backend only, compile nothing.
  FASTSOCK_DEBUG=1          build the extension with -O0 -g, assertions on, and Cython
                            bounds checks; writes the Cython HTML annotation next to the .pyx.
  FASTSOCK_SANITIZE=list    compile and link with -fsanitize=list (e.g. address,undefined),
                            at -O1 (-O0 with FASTSOCK_DEBUG=1); the interpreter must then
                            preload the runtimes (see `make asan`).
Non-CPython interpreters and non-POSIX platforms get the pure package automatically.
Any other compile failure stops the install with a message naming the way out.
"""

import glob
import os
import platform
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
NO_EXTENSIONS = os.environ.get("FASTSOCK_NO_EXTENSIONS", "") not in ("", "0")
DEBUG = os.environ.get("FASTSOCK_DEBUG", "") not in ("", "0")
SANITIZE = os.environ.get("FASTSOCK_SANITIZE", "")
CAN_BUILD = platform.python_implementation() == "CPython" and os.name == "posix"

HOW_TO_SKIP = (
    "fastsock: building the C extension failed. fastsock does not silently fall back to "
    "the slow path. Fix the compiler error above, or install the pure-Python backend "
    "explicitly with:  FASTSOCK_NO_EXTENSIONS=1 pip install fastsock"
)


class LoudBuildExt(build_ext):
    """build_ext that turns any compile failure into an error naming FASTSOCK_NO_EXTENSIONS."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any compiler/Cython failure
            raise SystemExit(f"{exc}\n\n{HOW_TO_SKIP}") from exc

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            raise SystemExit(f"{exc}\n\n{HOW_TO_SKIP}") from exc


def extensions():
    """The extension list: empty for the pure build, else the one Cython module."""
    if NO_EXTENSIONS or not CAN_BUILD:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError as exc:  # pyproject.toml lists Cython as a build requirement
        raise SystemExit(f"fastsock: Cython is required to build the extension ({exc}).\n{HOW_TO_SKIP}") from exc

    from setuptools import Extension

    c_sources = sorted(glob.glob("src_c/*.c"))
    cflags = ["-std=c11", "-Wall", "-Wno-unused-function", "-fno-strict-aliasing"]
    macros = [("_GNU_SOURCE", "1")]
    if DEBUG:
        cflags += ["-O0", "-g3", "-UNDEBUG"]
    else:
        # -O1 under the sanitizers: ASan's recommended level (readable stack traces, little
        # inlining). With FASTSOCK_DEBUG=1 too, -O0 above: the shortest compile (CI's job).
        cflags += ["-O1" if SANITIZE else "-O2"]
        macros.append(("NDEBUG", "1"))
    ldflags = []
    if SANITIZE:
        cflags += [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer", "-g"]
        ldflags += [f"-fsanitize={SANITIZE}"]
    ext = Extension(
        "fastsock._c._speedups",
        sources=["fastsock/_c/_speedups.pyx", *c_sources],
        include_dirs=["src_c"],
        define_macros=macros,
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        depends=sorted(
            glob.glob("src_c/*.h") + glob.glob("fastsock/_c/*.pxi") + glob.glob("fastsock/_c/**/*.pxd", recursive=True)
        ),
    )
    directives = {
        "language_level": "3",
        "embedsignature": True,
        "boundscheck": DEBUG,
        "wraparound": False,
        "initializedcheck": DEBUG,
        "cdivision": True,
    }
    return cythonize([ext], compiler_directives=directives, annotate=DEBUG, quiet=True)


if __name__ == "__main__":
    os.chdir(HERE)
    if not CAN_BUILD and not NO_EXTENSIONS:
        print("fastsock: non-CPython or non-POSIX platform, installing the pure-Python backend", file=sys.stderr)
    setup(ext_modules=extensions(), cmdclass={"build_ext": LoudBuildExt})
