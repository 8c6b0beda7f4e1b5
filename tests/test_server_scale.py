"""fastsock.Server at scale and under hostile clients, on both backends (issue 11): 10,000
connections, slowloris, clients that never read, malformed input on every path.

Each test runs a scenario of tests/scale_scenarios.py through scaleutil.run(): the server and
the clients in child processes (the server's RSS and descriptors are its own; RLIMIT_NOFILE
is raised in each child), on 127.0.0.1, every loop bounded. The tests assert counts, bounds and that service
continues, never speed: bench/server_scale.py prints the latencies and ratios.
"""

from __future__ import annotations

import sys

import pytest
import scaleutil

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the scenarios read /proc and use epoll (Linux)"),
]


def _backend(impl) -> str:
    return "python" if impl.__name__ == "fastsock._py" else "c"


def _run(scenario: str, impl, **params):
    shortfall = scaleutil.nofile_shortfall(scaleutil.needs_nofile(scenario, params))
    if shortfall:
        pytest.skip(shortfall)
    result = scaleutil.run(scenario, _backend(impl), **params)
    assert result["backend"] == _backend(impl)
    assert result["server_running"], result["server_stderr"]
    return result


def test_ten_thousand_connections_each_one_request_a_second_every_request_answered(impl):
    conns, seconds = 10_000, 10
    r = _run("tenk", impl, conns=conns, seconds=seconds)
    figures = {k: v for k, v in r.items() if k != "server_stderr"}
    assert r["server_connections"] == conns + 1, figures  # all open at once, and the control connection
    assert r["peak_fds"] >= r["base_fds"] + conns, figures
    assert r["sent"] == r["answered"] == conns * seconds, figures  # each reply checked against its request
    assert r["wrong"] == r["eof"] == r["send_failed"] == r["unanswered"] == 0, figures
    assert r["closed_fds"] == r["base_fds"], figures  # every descriptor given back


#: The slowloris close may come later than frame_timeout + TICK only by this much: the close
#: is seen by a client loop that drives 1,000 trickling sockets (10,000 sends/s), on a shared
#: 2-core machine where the server, the driver, the prober and other jobs compete. Measured
#: here (load average ~6): 7 ms late at most (C), 51 ms (pure). 0.5 s is 10 times that, and
#: tells a 1 ms timer from one checked once a second (up to 1 s late), and both from a close
#: at the frame's completion (10.4 s) or never (a timer restarted by each byte).
SLOWLORIS_ALLOWANCE = 0.5


def test_slowloris_thousand_connections_closed_by_frame_timeout_while_a_client_is_served(impl):
    timeout = 2.0
    r = _run("slowloris", impl, conns=1000, frame_timeout=timeout, pace=0.1, baseline=False)
    figures = {k: v for k, v in r.items() if k != "server_stderr"}
    assert r["closed"] == 1000 and r["server_timeouts"] == 1000, figures
    assert r["completed"] == 0 and r["echoed"] == 0, figures  # no trickled frame got through
    # CLOCK_MONOTONIC on both sides: the deadline starts at the server's read of the first byte,
    # after the client noted the time, so no close can be seen before the timeout
    assert r["close_min_s"] >= timeout - 1e-3, figures
    assert r["close_max_s"] <= timeout + scaleutil.TICK + SLOWLORIS_ALLOWANCE, figures
    d = r["during"]
    assert d["sent"] == d["answered"] > 100 and d["wrong"] == 0, figures
    assert d["first"] <= r["attack_first"] and d["last"] >= r["attack_last_close"], figures  # throughout


def test_clients_that_pipeline_and_never_read_cost_at_most_the_documented_bound(impl):
    conns = 100
    r = _run("nonreading", impl, conns=conns, reply=65536)
    figures = {k: v for k, v in r.items() if k != "server_stderr"}
    options = scaleutil.SERVERS["nonreading"]
    assert r["paused_at_start"] == r["paused_at_end"] == conns, figures  # held by backpressure, not closed
    assert r["server_connections"] == conns + 2, figures
    assert r["pending_max"] <= options["high_water"] + 65536 + 4, figures  # high_water + one reply queued
    for phase in ("filling", "held"):  # while the server fills their queues and the kernel's, and after
        c = r[phase]
        assert c["sent"] == c["answered"] >= 1 and c["wrong"] == 0, figures
    assert r["held"]["sent"] >= 10 and r["served_after"], figures
    assert r["closed_fds"] == r["base_fds"], figures
    # The RSS in use while they are held (after gc.collect and malloc_trim, here and in the
    # baseline): the untrimmed RSS also counts free memory glibc keeps for reuse, which on
    # the pure backend swings by 25 MiB from run to run (the freed 64 KiB replies).
    # baseline + conns * (max_buffer + high_water + one reply), on both backends (the
    # compiled output queue grows only to what is queued once past half the high-water mark)
    within = r["held_trimmed"] <= r["limit_trimmed"]
    assert within, figures


def test_malformed_input_on_every_path_closes_only_the_offender_and_leaks_nothing(impl):
    from fastsock._py.server import _COMPACT_MIN

    per_kind, rounds = 20, 6
    r = _run("malformed", impl, rounds=rounds, per_kind=per_kind)
    before = r["before"]
    waited = [k for k, how in scaleutil.KINDS.items() if how != "reset"]
    for rd in r["rounds"]:
        figures = {"before": before, "round": rd}
        # every offender whose close a client can see was closed by the server; the resets
        # too, since the server is back to its two connections and its descriptors
        assert rd["closed_by_server"] == dict.fromkeys(waited, per_kind), figures
        assert rd["frames_before_bad"] == per_kind, figures  # replies to the frames before a bad header left
        assert rd["served_during"] and rd["served_after"], figures
        assert rd["connections"] == before["connections"] and rd["fds"] == before["fds"], figures
        # RSS once the allocator gave its free memory back (malloc_trim), against before any
        # round: 16 MiB covers what stays resident in partly used pymalloc arenas and heap
        # pages (measured: +1.3 MiB C, up to +10 MiB pure, not growing), while each round's
        # offenders hold 20 MiB of half frames and 180 reads of 64 KiB: a leak of even one
        # read buffer per offender (11 MiB a round) crosses it by the second round.
        assert rd["rss_trimmed"] <= before["rss_trimmed"] + (16 << 20), figures
        # Connection objects: the compiled backend keeps none once closed; the pure one's
        # timer heaps keep closed ones until there are more than _COMPACT_MIN (measured: 72
        # at most). A leak of every offender would be 180 more a round.
        assert rd["conn_objects"] <= before["conn_objects"] + 2 * _COMPACT_MIN, figures
        # GC-tracked objects: those Connections and their heap entries (measured: +365 at
        # most); a leak of one object per offender crosses 1,000 by the sixth round.
        assert rd["objects"] <= before["objects"] + 1000, figures
    assert len(r["rounds"]) == rounds
    # the three kinds of refused header are counted as errors (random bytes mostly too)
    assert r["rounds"][-1]["errors"] >= rounds * per_kind * 3
