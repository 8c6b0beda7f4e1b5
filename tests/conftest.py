"""Test configuration: every behaviour test runs once per backend through the `impl` fixture.

`impl` is the backend module (`fastsock._c._speedups` or `fastsock._py`); both expose the
same names. `--no-c-extensions` drops the compiled backend (for a FASTSOCK_NO_EXTENSIONS
install); without it, a missing extension is an error, never a silent skip. `--backend c`
runs the backend-parametrized tests on the compiled backend only (CI's debug-build and wheel
jobs, which test what differs in those builds; the pure backend is tested by the other jobs);
`--backend python` is `--no-c-extensions`. Tests marked `slow` (multi-process, thousands of
connections, CPython's socket and selector suites, seconds-long timer waits) run unless
`-m "not slow"` deselects them, which CI does only on the jobs that repeat the main one on
another interpreter (and on the pure job: main runs them on the pure backend too).

Fixtures shared by the Poller and Selector tests (test_poller.py, test_selector.py,
test_selector_asyncio.py) are here too: `method` (each poll method of the backend) and
`pair` (a non-blocking socketpair); their plain helpers are in pollutil.py.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
from collections.abc import Iterator
from types import ModuleType

import pytest
from hypothesis import settings
from sockutil import pure_only

# HYPOTHESIS_PROFILE=ci-fast (CI's runs on the other interpreters) lowers the example count
# of property tests without their own (those with one use sockutil.examples).
settings.register_profile("ci-fast", max_examples=10)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

BACKENDS = ["c", "python"]
POLL_METHODS = ["epoll", "poll"]  # what `method` tries; the pure backend's "select" is tested alone


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-c-extensions",
        action="store_true",
        default=False,
        help="run the tests on the pure-Python backend only (for installs without the extension)",
    )
    parser.addoption(
        "--backend",
        choices=["both", "c", "python"],
        default="both",
        help="the backends the `impl` tests run on (python: as --no-c-extensions)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # A background job of a non-interactive shell starts with SIGINT ignored, and children
    # inherit that. The Ctrl-C tests (here and in the servers' child processes) need it as in
    # a terminal: a handled SIGINT here, which exec resets to the default in every child.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if not pure_only(config):
        try:
            importlib.import_module("fastsock._c._speedups")
        except ImportError as exc:
            raise pytest.UsageError(
                f"the compiled backend does not import ({exc}); build it (pip install -e .) "
                "or pass --no-c-extensions to test the pure backend only"
            ) from exc


def pytest_report_header(config: pytest.Config) -> str:
    """Name the fastsock under test: the installed package, not a stray source tree."""
    import fastsock

    return f"fastsock {fastsock.__version__}: backend {fastsock.BACKEND}, from {os.path.dirname(fastsock.__file__)}"


def _backends(config: pytest.Config) -> list[str]:
    if pure_only(config):
        return ["python"]
    return ["c"] if config.getoption("--backend") == "c" else BACKENDS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "impl" in metafunc.fixturenames:
        metafunc.parametrize("impl", _backends(metafunc.config), indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if pure_only(config):
        keep = [item for item in items if item.get_closest_marker("c_only") is None]
        deselected = [item for item in items if item.get_closest_marker("c_only") is not None]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = keep


@pytest.fixture
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """The backend under test: the compiled module or the pure-Python package."""
    if request.param == "c":
        return importlib.import_module("fastsock._c._speedups")
    return importlib.import_module("fastsock._py")


@pytest.fixture(params=POLL_METHODS)
def method(request: pytest.FixtureRequest, impl: ModuleType) -> str:
    """Each poll method the backend has here (epoll is Linux-only)."""
    if request.param not in impl.POLL_METHODS:
        pytest.skip(f"{request.param} is not available on this platform")
    return str(request.param)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of non-blocking stdlib sockets (AF_UNIX), closed afterwards.
    (test_socket_transfer.py has its own `pair`, of backend sockets on every transport.)"""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()
