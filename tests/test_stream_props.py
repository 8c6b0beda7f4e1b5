"""Property test: every framing round-trips through every chunking of the byte stream, and
both backends cut the same frames out of it."""

from __future__ import annotations

import importlib
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sockutil import examples, pure_only
from streamutil import ALL_FRAMINGS, Peer, make_pair

BACKENDS = {"c": "fastsock._c._speedups", "python": "fastsock._py"}


def _modules(pytestconfig: pytest.Config) -> list[str]:
    """Both backends, or only the pure one under --no-c-extensions."""
    if pure_only(pytestconfig):
        return [BACKENDS["python"]]
    return list(BACKENDS.values())


def _payload_strategy(name: str) -> st.SearchStrategy[bytes]:
    if name.startswith("Delimiter"):
        delim = {"Delimiter(\\n)": b"\n", "Delimiter(\\r\\n)": b"\r\n", "Delimiter(END!)": b"END!"}[name]
        # Payloads that do not contain the delimiter (but may contain parts of it).
        return st.binary(max_size=300).filter(lambda p: delim not in p and not (delim + p + delim)[1:-1].count(delim))
    if name == "LengthPrefix(1,big)":
        return st.binary(max_size=255)
    return st.binary(max_size=3000)


def _run(module: str, make, payloads: list[bytes], cuts: list[int], mode: str) -> list[bytes]:
    """Encode `payloads`, write the wire bytes in pieces of the `cuts` sizes from a raw peer,
    and read frames back with a Stream of backend `module`."""
    impl = importlib.import_module(module)
    framing = make(impl)
    wire = b"".join(framing.encode(p) for p in payloads)
    a, b = make_pair(impl, "unix")
    stream = impl.Stream(a, framing=framing, read_size=64)

    def write() -> None:
        pos = 0
        i = 0
        while pos < len(wire):
            size = cuts[i % len(cuts)]
            b.sendall(wire[pos:pos + size])
            pos += size
            i += 1
        b.close()

    writer = Peer(write)
    got: list[bytes] = []
    with stream:
        if mode == "frames":
            while True:
                batch = stream.read_frames()
                if not batch:
                    break
                got += batch
        else:
            got = list(stream)
    writer.join()
    return got


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name,make", ALL_FRAMINGS, ids=[n for n, _ in ALL_FRAMINGS])
def test_every_chunking_roundtrips_on_both_backends(pytestconfig, name, make):
    modules = _modules(pytestconfig)

    @settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(payloads=st.lists(_payload_strategy(name), max_size=25),
           cuts=st.lists(st.integers(1, 700), min_size=1, max_size=10) | st.just([1]),
           mode=st.sampled_from(["frames", "iter"]))
    def check(payloads, cuts, mode):
        for module in modules:
            assert _run(module, make, payloads, cuts, mode) == payloads

    check()


@pytest.mark.timeout(120)
def test_one_byte_at_a_time_large_frames(pytestconfig):
    rng = random.Random(7)
    payloads = [rng.randbytes(rng.randrange(0, 5000)) for _ in range(5)]
    for module in _modules(pytestconfig):
        for name, make in ALL_FRAMINGS:
            if name.startswith("Delimiter") or name.startswith("LengthPrefix(1"):
                continue
            assert _run(module, make, payloads, [1], "frames") == payloads, (module, name)
