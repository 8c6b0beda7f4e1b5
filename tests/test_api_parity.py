"""Both backends expose the same names with the same signatures and docstrings."""

from __future__ import annotations

import importlib
import inspect

import pytest

pytestmark = pytest.mark.c_only  # compares against the compiled module

PURE = importlib.import_module("fastsock._py")


def compiled():
    return importlib.import_module("fastsock._c._speedups")


def test_same_public_names():
    assert sorted(compiled().__all__) == sorted(PURE.__all__)


DUNDERS = ("__iter__", "__next__", "__enter__", "__exit__", "__len__", "__contains__")


def _public_members(cls):
    """Public methods (attributes may be slots or instance state: compared by behaviour tests)."""
    return sorted(n for n, v in inspect.getmembers(cls)
                  if callable(v) and (not n.startswith("_") or n in DUNDERS))


@pytest.mark.parametrize("name", sorted(PURE.__all__))
def test_same_signatures_and_docstrings(name):
    c_obj, py_obj = getattr(compiled(), name), getattr(PURE, name)
    if c_obj is py_obj:
        return  # shared objects (framings, constants' shared sources)
    if name == "POLL_METHODS":  # what each backend can do: the pure one adds "select"
        assert set(c_obj) <= set(py_obj)
        return
    if not callable(py_obj):
        assert c_obj == py_obj, name
        return
    if inspect.isclass(py_obj):
        assert _public_members(c_obj) == _public_members(py_obj), name
        for member in _public_members(py_obj):
            c_m, py_m = getattr(c_obj, member), getattr(py_obj, member)
            if callable(py_m) and not inspect.isclass(py_m) and member not in DUNDERS:
                try:
                    py_sig = inspect.signature(py_m)
                except (TypeError, ValueError):
                    continue
                assert _params(inspect.signature(c_m)) == _params(py_sig), f"{name}.{member}"
            if member in vars(py_obj) and not member.startswith("_"):
                assert (c_m.__doc__ or "").strip(), f"{name}.{member} has no docstring in the C backend"
    else:
        assert _params(inspect.signature(c_obj)) == _params(inspect.signature(py_obj)), name
    assert (c_obj.__doc__ or "").strip(), f"{name} has no docstring"


def _params(sig):
    return [(p.name, p.kind, p.default if p.default is not inspect.Parameter.empty else "<required>")
            for p in sig.parameters.values()]
