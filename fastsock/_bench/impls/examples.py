"""The project's examples (examples/*.py of the source checkout), loaded by file path.

W6 serves real protocols with the examples' own handler code (examples/resp_server.py's
`execute` and `handler`, examples/http_server.py's `respond` and `handler`), so that every
server of a W6 table runs the same protocol code. The examples are not in the wheel: they
are found in $FASTSOCK_EXAMPLES, else in the `examples/` directory next to the directory
that holds the `fastsock` package (a source checkout or an editable install).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Optional

ENV = "FASTSOCK_EXAMPLES"

_LOADED: dict[str, ModuleType] = {}


def directory() -> Path:
    """Where the examples are looked for ($FASTSOCK_EXAMPLES, else <checkout>/examples)."""
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    import fastsock

    return Path(fastsock.__file__).resolve().parents[1] / "examples"


def load(name: str, needs: tuple[str, ...]) -> tuple[Optional[ModuleType], Optional[str]]:
    """(the module examples/<name>.py, None), or (None, why it cannot be used): not found,
    failing to import, or lacking one of the names in `needs`."""
    if name in _LOADED:
        mod: Optional[ModuleType] = _LOADED[name]
    else:
        path = directory() / f"{name}.py"
        if not path.is_file():
            return None, f"{path} not found (the examples are in the source checkout, not the wheel; set {ENV})"
        spec = importlib.util.spec_from_file_location(f"fastsock_example_{name}", path)
        if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
            return None, f"{path} cannot be loaded"
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses and pickling look the module up by name
        try:
            spec.loader.exec_module(mod)
        except Exception as exc:  # an example in progress may not import yet: say why
            del sys.modules[spec.name]
            return None, f"{path} does not import ({type(exc).__name__}: {exc})"
        _LOADED[name] = mod
    absent = [n for n in needs if not hasattr(mod, n)]
    if absent:
        return None, f"examples/{name}.py has no {', '.join(absent)}"
    return mod, None
