"""Chooses the implementation: the compiled `_c._speedups` module or the pure `_py` package.

FASTSOCK_PURE=1 forces the pure backend; FASTSOCK_PURE=0 demands the compiled one
(ImportError if it is missing). Unset: compiled when importable, else pure.
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["BACKEND", "impl"]

_forced = os.environ.get("FASTSOCK_PURE", "")

impl: ModuleType
if _forced not in ("", "0"):
    from . import _py as impl

    BACKEND = "python"
elif _forced == "0":
    try:
        from ._c import _speedups as impl
    except ImportError as exc:
        raise ImportError(
            "FASTSOCK_PURE=0 asks for the compiled backend, but fastsock._c._speedups does not import "
            f"({exc}). Reinstall fastsock with a C compiler available, or unset FASTSOCK_PURE."
        ) from exc
    BACKEND = "c"
else:
    try:
        from ._c import _speedups as impl

        BACKEND = "c"
    except ImportError:  # built with FASTSOCK_NO_EXTENSIONS=1, or a platform without the extension
        from . import _py as impl

        BACKEND = "python"
