"""CPython's own selectors test suite (Lib/test/test_selectors.py) run on fastsock.Selector,
on both backends and every poll method each backend has."""

from __future__ import annotations

import importlib
import os
import unittest

import pytest

import fastsock._py as pure

# Seconds of real timeouts and signal waits per class: run by CI's main and debug jobs, not
# repeated by every other interpreter's.
pytestmark = pytest.mark.slow

# CPython ships its own test suite as the `test` package; PyPy and some distributions do not.
cpython = pytest.importorskip("test.test_selectors", reason="this interpreter does not ship CPython's "
                              "test.test_selectors (PyPy, or a distribution without the test package)")

try:
    compiled = importlib.import_module("fastsock._c._speedups")
except ImportError:  # a --no-c-extensions run: the c_only classes below are deselected
    compiled = pure


def _selector_class(backend, method):
    """A Selector class whose no-argument constructor uses `method` (the suite calls
    SELECTOR() and reads SELECTOR.__name__)."""

    class Selector(backend.Selector):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__(method=method)

    Selector.__name__ = f"Selector_{method}"
    return Selector


class _Base(cpython.BaseSelectorTestCase):
    def test_modify_unregister(self) -> None:
        # CPython's version mocks the stdlib classes' _selector_cls and skips any other
        # class; this is the same check (bpo-30014: a failed modify() unregisters) with a
        # real failure: the descriptor was closed behind the selector's back.
        s = self.SELECTOR()
        self.addCleanup(s.close)
        rd, wr = self.make_socketpair()
        s.register(rd, cpython.selectors.EVENT_READ)
        self.assertEqual(len(s.get_map()), 1)
        fd = rd.detach()
        os.close(fd)
        with self.assertRaises(OSError):
            s.modify(fd, cpython.selectors.EVENT_WRITE)
        self.assertEqual(len(s.get_map()), 0)


class _Suite(_Base, cpython.ScalableSelectorMixIn):
    """Every test of BaseSelectorTestCase, plus the 'more than FD_SETSIZE fds' one."""


@pytest.mark.c_only
class TestCEpoll(_Suite, unittest.TestCase):
    SELECTOR = _selector_class(compiled, "epoll")


@pytest.mark.c_only
class TestCPoll(_Suite, unittest.TestCase):
    SELECTOR = _selector_class(compiled, "poll")


@pytest.mark.c_only
class TestCDefault(_Base, unittest.TestCase):
    SELECTOR = compiled.Selector


class TestPyPoll(_Suite, unittest.TestCase):
    SELECTOR = _selector_class(pure, "poll")


class TestPyEpoll(_Suite, unittest.TestCase):
    SELECTOR = _selector_class(pure, "epoll")


class TestPySelect(_Base, unittest.TestCase):
    """select.select() cannot go past FD_SETSIZE: no ScalableSelectorMixIn here."""

    SELECTOR = _selector_class(pure, "select")


class TestPyDefault(_Base, unittest.TestCase):
    SELECTOR = pure.Selector
