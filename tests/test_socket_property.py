"""Property: on the same byte stream, however the writer splits it and however the reader
asks for it, both backends return exactly the same bytes (and the same partial data at EOF)."""

from __future__ import annotations

import importlib
import socket as stdsocket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sockutil import Peer, examples, pure_only, recv_all

import fastsock

pytestmark = pytest.mark.timeout(120)


def _backends(pytestconfig):
    names = ["fastsock._py"]
    if not pure_only(pytestconfig):
        names.append("fastsock._c._speedups")
    return [importlib.import_module(n) for n in names]


def _run(impl, data: bytes, write_sizes: list[int], read_plan: list[tuple[str, int]]):
    """Writer sends `data` in `write_sizes` pieces then closes; reader follows `read_plan`."""
    a, b = impl.socketpair()
    with b:
        def writer():
            with a:
                pos = 0
                sizes = iter(write_sizes)
                while pos < len(data):
                    step = max(1, next(sizes, len(data)))
                    stdsocket.socket.sendall(a, data[pos:pos + step])
                    pos += step

        peer = Peer(writer)
        out = []
        for method, n in read_plan:
            try:
                if method == "exactly":
                    out.append(("ok", b.recv_exactly(n)))
                elif method == "into":
                    buf = bytearray(n)
                    out.append(("ok", b.recv_into_exactly(buf), bytes(buf)))
                else:  # "into-prefix": a larger buffer, only n bytes asked for
                    buf = bytearray(n + 3)
                    out.append(("ok", b.recv_into_exactly(buf, n), bytes(buf[:n])))
            except fastsock.IncompleteReadError as exc:
                out.append(("eof", exc.partial, exc.expected))
                break
        peer.join()
        return out


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(min_size=0, max_size=20_000),
    write_sizes=st.lists(st.integers(1, 5000), max_size=40),
    read_plan=st.lists(st.tuples(st.sampled_from(["exactly", "into", "into-prefix"]), st.integers(1, 6000)),
                       min_size=1, max_size=12),
)
def test_backends_agree_on_every_chunking(pytestconfig, data, write_sizes, read_plan):
    results = [_run(impl, data, write_sizes, read_plan) for impl in _backends(pytestconfig)]
    assert all(r == results[0] for r in results)
    # And both are right: the concatenation of what was read is a prefix of what was sent.
    got = b"".join(item[1] if item[0] == "eof" else item[-1] for item in results[0])
    assert data.startswith(got)
    if results[0][-1][0] != "eof":
        assert len(got) == sum(n for _, n in read_plan)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.binary(max_size=3000), max_size=50), chunk=st.integers(1, 4096))
def test_sendall_many_equals_join(pytestconfig, parts, chunk):
    for impl in _backends(pytestconfig):
        a, b = impl.socketpair()
        with a, b:
            expected = b"".join(parts)
            peer = Peer(lambda b=b, expected=expected: recv_all(b, len(expected), chunk))  # any chunking
            assert a.sendall_many(parts) == len(expected)
            assert peer.join() == expected
