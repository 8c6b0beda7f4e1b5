"""The fault proxy's summary: a fixed matrix of faults x backend, each fault injected into
TRANSFERS request/reply exchanges with an impl.Server (echo, LengthPrefix(4)) through the
proxy, the client a backend Stream. Per fault it prints how many transfers ran, the bytes
sent, forwarded and delivered, and the bytes lost and duplicated, and asserts those are 0:
what the client application got (the frames it read, then the partial frame the error
carried or the Stream still buffers) is exactly the bytes the proxy forwarded, which are a
prefix of what the server sent (all of it, without an ending fault).

The bytes counted are the replies' (server -> client), the direction that carries the
fault; the requests (cut into random segments but for "none") must arrive intact too, which
the echo shows for every complete transfer.

Run `pytest tests/test_faults_summary.py -s` to see the tables (one per backend)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from faultproxy import Fault, FaultProxy, Faults
from serverutil import echo, serving
from test_faults_stream import BOUND, encode

from fastsock import IncompleteReadError

#: `slow`: it produces the README's figures (seconds per backend); CI's other-interpreter
#: jobs deselect it, the behaviours it counts are tested by the other test_faults_* files.
pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

#: Faults of the matrix: the replies' direction carries the ending (truncate, reset,
#: stall) at a random byte; the requests' direction is cut into random segments.
FAULTS = ["none", "1-byte segments", "random segments", "delayed segments", "truncate", "reset", "stall"]
#: Transfers per fault and backend.
TRANSFERS = 8
#: What the client must see per fault (a truncation at a frame boundary is a clean EOF).
OUTCOMES = {"none": {"complete"}, "1-byte segments": {"complete"}, "random segments": {"complete"},
            "delayed segments": {"complete"}, "truncate": {"IncompleteReadError", "EOFError"},
            "reset": {"ConnectionResetError"}, "stall": {"TimeoutError"}}


@dataclass
class Row:
    """One fault's totals."""

    fault: str
    transfers: int = 0
    sent: int = 0
    forwarded: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


def faults_for(fault: str, cut: int, seed: int) -> Faults:
    """The Faults of one transfer (`cut`: where an ending fault ends the replies)."""
    up = Fault() if fault == "none" else Fault(split=(1, 64), seed=seed)
    down = {
        "none": Fault(),
        "1-byte segments": Fault(split=1),
        "random segments": Fault(split=(1, 97), seed=seed),
        "delayed segments": Fault(split=(1, 512), delay=(0.0, 0.0005), seed=seed),
        "truncate": Fault(split=(1, 97), truncate_after=cut, seed=seed),
        "reset": Fault(split=(1, 97), reset_after=cut, seed=seed),
        "stall": Fault(split=(1, 97), stall_after=cut, seed=seed),
    }[fault]
    return Faults(up=up, down=down)


def loss(sent: bytes, forwarded: int, delivered: bytes) -> tuple[int, int]:
    """(lost, duplicated): bytes the proxy forwarded that the application did not get
    intact, and bytes the application got that are not the ones forwarded."""
    expected = sent[:forwarded]
    same = 0
    for a, b in zip(expected, delivered):
        if a != b:
            break
        same += 1
    return len(expected) - same, len(delivered) - same


def run_fault(impl: Any, address: Any, fault: str) -> Row:
    """TRANSFERS transfers with `fault`, one proxied connection each."""
    rng = random.Random(f"summary/{fault}")
    framing = impl.LengthPrefix(4)
    transfers = []
    for _ in range(TRANSFERS):
        payloads = [bytes(rng.randrange(256) for _ in range(rng.randrange(1500))) for _ in range(rng.randint(3, 12))]
        wire = b"".join(encode(framing, p) for p in payloads)
        transfers.append((payloads, wire, rng.randrange(1, len(wire))))
    plan = lambda i: faults_for(fault, transfers[i][2], seed=i)  # noqa: E731
    row = Row(fault)
    ending = fault in ("truncate", "reset", "stall")
    with FaultProxy(address, plan) as proxy:
        for i, (payloads, wire, cut) in enumerate(transfers):
            with impl.connect(proxy.address, framing=framing, timeout=BOUND) as client:
                client.write_frames(payloads)
                client.flush()
                link = proxy.link(i)
                if fault == "stall":  # the replies are in before the client starts its deadline
                    proxy.wait(lambda link=link: link.down.done == "stalled", "the stall")
                    client.socket.settimeout(0.05)
                got: list[bytes] = []
                tail = b""
                try:
                    while len(got) < len(payloads):
                        got.append(client.read_frame())
                    outcome = "complete"
                except IncompleteReadError as exc:
                    outcome, tail = "IncompleteReadError", exc.partial
                except EOFError:
                    outcome = "EOFError"
                except (ConnectionResetError, TimeoutError) as exc:
                    outcome = type(exc).__name__
                    tail = client.peek() if client.buffered else b""  # kept by the Stream
            if fault != "stall":  # the proxy's counters are final once the connection is over
                proxy.wait(lambda link=link: link.closed, "the connection closed")
            delivered = b"".join(encode(framing, p) for p in got) + tail
            down, up = link.down, link.up
            assert down.balanced() and up.balanced(), link
            if not ending:  # the requests all went through (and came back intact: the echo)
                assert up.forwarded == len(wire), (fault, i, up)
            assert down.forwarded == (cut if ending else len(wire)), (fault, i, down)
            lost, duplicated = loss(wire, down.forwarded, delivered)
            row.transfers += 1
            row.sent += len(wire)
            row.forwarded += down.forwarded
            row.delivered += len(delivered)
            row.lost += lost
            row.duplicated += duplicated
            row.outcomes[outcome] = row.outcomes.get(outcome, 0) + 1
            assert outcome in OUTCOMES[fault], (fault, i, outcome)
    return row


def table(backend: str, rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [f"fault proxy summary, backend {backend}: {TRANSFERS} transfers per fault "
             "(request/reply with impl.Server, LengthPrefix(4), client Stream)",
             "| fault | transfers | bytes sent | forwarded | delivered | lost | duplicated | client saw |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        seen = ", ".join(f"{k} x{v}" for k, v in sorted(r.outcomes.items()))
        lines.append(f"| {r.fault} | {r.transfers} | {r.sent:,} | {r.forwarded:,} | {r.delivered:,} | "
                     f"{r.lost} | {r.duplicated} | {seen} |")
    return "\n".join(lines)


def test_fault_matrix_loses_and_duplicates_nothing(impl):
    backend = "c" if impl.__name__.endswith("_speedups") else "python"
    with serving(impl, echo, framing=impl.LengthPrefix(4)) as (server, address):
        rows = [run_fault(impl, address, fault) for fault in FAULTS]
    print()
    print(table(backend, rows))
    assert [r.transfers for r in rows] == [TRANSFERS] * len(FAULTS)
    assert [(r.fault, r.lost, r.duplicated) for r in rows] == [(f, 0, 0) for f in FAULTS]
    assert sum(r.sent for r in rows[:4]) == sum(r.delivered for r in rows[:4])
