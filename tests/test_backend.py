"""Backend selection, checked in clean interpreters: C is the default after a normal install,
FASTSOCK_PURE switches it, and every module imports on its own (no circular imports)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tempfile
import textwrap

import pytest
from sockutil import subprocess_env

import fastsock

pytestmark = pytest.mark.timeout(60)


def run_python(code: str, **env: str) -> str:
    full_env = subprocess_env()
    full_env.update(env)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.c_only
def test_c_is_the_default_after_a_normal_install():
    assert run_python("import fastsock; print(fastsock.BACKEND)") == "c"


@pytest.mark.c_only
def test_fastsock_pure_0_demands_c():
    assert run_python("import fastsock; print(fastsock.BACKEND)", FASTSOCK_PURE="0") == "c"


def test_fastsock_pure_forces_python():
    out = run_python("import fastsock; print(fastsock.BACKEND, fastsock.socket.__module__)", FASTSOCK_PURE="1")
    assert out == "python fastsock._py.socket"


def test_backend_matches_the_installed_extension():
    try:
        import fastsock._c._speedups  # noqa: F401
        expected = "c"
    except ImportError:
        expected = "python"
    assert run_python("import fastsock; print(fastsock.BACKEND)") == expected


def _modules() -> list[str]:
    names = ["fastsock"]
    for info in pkgutil.walk_packages(fastsock.__path__, "fastsock."):
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("module", _modules())
def test_each_module_imports_alone(module):
    # Importing any module first, in a fresh interpreter, must work (no import cycles).
    run_python(f"import {module}")


@pytest.mark.parametrize("pure", [pytest.param("0", marks=pytest.mark.c_only), "1"])
def test_import_fastsock_as_socket_runs_howto_code(pure):
    out = run_python("""
        import threading
        import fastsock as socket

        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(5)

        def serve():
            conn, _ = server.accept()
            with conn:
                size = socket.ntohl(int.from_bytes(conn.recv_exactly(4), "little"))
                conn.sendall(conn.recv_exactly(size)[::-1])

        t = threading.Thread(target=serve)
        t.start()
        with socket.create_connection(server.getsockname(), timeout=10) as client:
            payload = b"stream sockets carry bytes, not messages"
            client.sendall_many([socket.htonl(len(payload)).to_bytes(4, "little"), payload])
            print(client.recv_exactly(len(payload))[::-1].decode(), socket.BACKEND)
        t.join()
        server.close()
    """, FASTSOCK_PURE=pure)
    assert out == "stream sockets carry bytes, not messages " + ("c" if pure == "0" else "python")
