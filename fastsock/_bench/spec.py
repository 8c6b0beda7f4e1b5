"""The workloads W1-W6 of WORKLOADS.md and M1 (idle-connection memory), their counts (full and
--quick), and the implementations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class Workload:
    """One workload: what is sent, how much, and how its figures are named."""

    key: str
    name: str
    metric: str  # the headline figure's unit, e.g. "GB/s"
    metric_scale: float  # multiply ops/s by this to get the headline figure
    cpu_unit: str  # server CPU per operation is shown in this unit
    cpu_scale: float  # multiply CPU seconds per op by this
    full: dict[str, Any] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)
    limit_s: int = 60  # hard limit of one run (server and client are killed past it)
    impls: tuple[str, ...] = ()
    # "single": one figure per run; "points": one per connection count (W4, W5), the server
    # serves until terminated and the client reads its CPU clock; "memory": M1's RSS per
    # connection (lower is better), measured by the client from /proc/<server pid>; "tool": W6,
    # a standard load generator (redis-benchmark, wrk) against a server that serves until
    # terminated, the runner reading the server's CPU clock around the client's run.
    kind: str = "single"
    variants: tuple[str, ...] = ()  # one table per variant (W6: the protocols "resp" and "http")
    c_program: str = ""  # the C reference program (default: the key in lower case)
    quick_repeat: int = 0  # --quick: at most this many repetitions (0: --repeat's); M1's figures barely move

    @property
    def program(self) -> str:
        return self.c_program or self.key.lower()


@dataclass(frozen=True)
class Impl:
    """One implementation; `pure` runs it with FASTSOCK_PURE=1, `reference` is the C programs."""

    key: str
    label: str
    pure: bool = False
    reference: bool = False
    fastsock: bool = False


IMPLS: dict[str, Impl] = {
    i.key: i
    for i in [
        Impl("c", "C reference", reference=True),
        Impl("fastsock", "fastsock (C backend)", fastsock=True),
        Impl("fastsock-frame", "fastsock (C) read_frame", fastsock=True),
        Impl("fastsock-pure", "fastsock (python backend)", pure=True, fastsock=True),
        Impl("stdlib-naive", "stdlib naive"),
        Impl("stdlib-best", "stdlib best"),
        Impl("stdlib-best-lowat", "stdlib best + SO_RCVLOWAT"),
        Impl("fastsock-lowat", "fastsock (C) + SO_RCVLOWAT", fastsock=True),
        Impl("stdlib-makefile", "stdlib makefile"),
        Impl("threaded", "stdlib threads"),
        Impl("asyncio-streams", "asyncio streams"),
        Impl("asyncio-protocol", "asyncio Protocol"),
        Impl("asyncio-fastsock", "asyncio Protocol on fastsock.Selector", fastsock=True),
        Impl("uvloop-streams", "uvloop streams"),
        Impl("uvloop-protocol", "uvloop Protocol"),
        Impl("gevent", "gevent"),
        Impl("fastsock-server", "fastsock Server (C)", fastsock=True),
        Impl("fastsock-server-pure", "fastsock Server (python)", pure=True, fastsock=True),
        Impl("fastsock-server-batch", "fastsock Server (C) batch=True", fastsock=True),
        # issue 12: fastsock.aio on the active backend (impls/aio.py)
        Impl("aio-stream", "fastsock.aio Stream on asyncio", fastsock=True),
        Impl("aio-protocol", "fastsock.aio FramedProtocol on asyncio", fastsock=True),
        Impl("aio-stream-uvloop", "fastsock.aio Stream on uvloop", fastsock=True),
        Impl("aio-protocol-uvloop", "fastsock.aio FramedProtocol on uvloop", fastsock=True),
    ]
}

BASELINE = "stdlib-best"  # "ratio to stdlib best"
REFERENCE = "c"
AIO = ("aio-stream", "aio-protocol", "aio-stream-uvloop", "aio-protocol-uvloop")  # the fastsock.aio rows


@dataclass(frozen=True)
class Target:
    """A figure fastsock.Server must reach (issues 10 and 11), reported as met or not when
    measured: `figure` (a key of report.stats: "server_cpu_per_op", "median", "used_median") of
    `impl`, divided by the same figure of `versus` (None: the figure itself), must be <=
    `bound` (< when `strict`; >= when `at_least`; None: the ratio is reported, no verdict), at
    `point` (None: at every connection count measured), in the table of `variant` (W6) and of
    `placement` ("same": only the same-core table; "": every table of the workload). `group`
    says which line of the report shows it (GROUPS)."""

    workload: str
    impl: str
    figure: str
    versus: Optional[str]
    bound: Optional[float]
    text: str
    point: Optional[int] = None
    strict: bool = False
    at_least: bool = False
    variant: str = ""
    placement: str = ""
    group: str = "server"


GROUPS = {"server": "Server targets (issues 10, 11)", "aio": "fastsock.aio targets (issue 12)"}


TARGETS: tuple[Target, ...] = (
    Target("W5", "fastsock-server", "server_cpu_per_op", "c", 1.5, "CPU/req vs C"),
    Target("W5", "fastsock-server", "server_cpu_per_op", "uvloop-protocol", 0.5, "CPU/req vs uvloop Protocol"),
    Target("W4", "fastsock-server", "server_cpu_per_op", "c", 1.15, "CPU/req vs C", point=100),
    Target("W4", "fastsock-server", "server_cpu_per_op", "uvloop-protocol", 1.0, "CPU/req vs uvloop Protocol",
           point=100, strict=True),
    Target("W4", "fastsock-server-pure", "server_cpu_per_op", "stdlib-best", 1.0, "CPU/req vs stdlib selectors"),
    Target("W5", "fastsock-server-pure", "server_cpu_per_op", "stdlib-best", 1.0, "CPU/req vs stdlib selectors"),
    Target("M1", "fastsock-server", "median", None, 2.0, "KiB per idle connection"),
    Target("M1", "fastsock-server", "used_median", None, 2.0, "KiB per connection idle after one request"),
    Target("W6", "fastsock-server", "server_cpu_per_op", "c", 1.5, "CPU/req vs redis-server", variant="resp"),
    Target("W6", "fastsock-server", "server_cpu_per_op", "uvloop-protocol", 0.5, "CPU/req vs uvloop Protocol",
           variant="resp"),
    Target("W6", "fastsock-server", "median", "uvloop-protocol", 2.0, "req/s vs uvloop Protocol", at_least=True,
           variant="http"),
    Target("W6", "fastsock-server", "median", "c", None, "req/s vs nginx", variant="http"),
    # issue 12: fastsock.aio against the asyncio code it replaces, on uvloop
    Target("W3", "aio-stream-uvloop", "median", "uvloop-protocol", 3.0, "read_frames frames/s vs uvloop Protocol",
           at_least=True, group="aio"),
    Target("W3", "aio-stream-uvloop", "median", "uvloop-streams", 8.0, "read_frames frames/s vs uvloop streams",
           at_least=True, group="aio"),
    Target("W5", "aio-protocol-uvloop", "server_cpu_per_op", "uvloop-protocol", 0.7, "CPU/req vs uvloop Protocol",
           point=100, group="aio"),
    Target("W5", "aio-stream-uvloop", "server_cpu_per_op", "uvloop-streams", 0.3, "CPU/req vs uvloop streams",
           point=100, group="aio"),
    Target("W2", "aio-stream-uvloop", "median", "uvloop-streams", 1.0, "round trips/s vs uvloop streams",
           at_least=True, placement="same", group="aio"),
    Target("W2", "aio-protocol-uvloop", "median", "uvloop-protocol", 1.0, "round trips/s vs uvloop Protocol",
           at_least=True, placement="same", group="aio"),
)

MiB = 1024 * 1024

WORKLOADS: dict[str, Workload] = {
    w.key: w
    for w in [
        Workload(
            "W1", "bulk", "GB/s", 1e-9, "µs/MiB", 1e6 * MiB,
            full={"bytes": 2048 * MiB}, quick={"bytes": 256 * MiB}, limit_s=60,
            impls=("c", "fastsock", "fastsock-lowat", "fastsock-pure", "stdlib-naive", "stdlib-best",
                   "stdlib-best-lowat", "asyncio-streams", "asyncio-protocol", "uvloop-streams",
                   "uvloop-protocol"),
        ),
        Workload(
            "W2", "ping-pong", "round trips/s", 1.0, "µs/rt", 1e6,
            full={"round_trips": 50_000, "warmup": 1_000, "payload": 64},
            quick={"round_trips": 3_000, "warmup": 300, "payload": 64}, limit_s=60,
            impls=("c", "fastsock", "fastsock-pure", "stdlib-naive", "stdlib-best", "stdlib-makefile",
                   "asyncio-streams", "asyncio-protocol", "uvloop-streams", "uvloop-protocol", *AIO),
        ),
        Workload(
            "W3", "pipelined frames", "frames/s", 1.0, "ns/frame", 1e9,
            full={"frames": 2_000_000, "payload": 100}, quick={"frames": 200_000, "payload": 100}, limit_s=90,
            impls=("c", "fastsock", "fastsock-frame", "fastsock-pure", "stdlib-naive", "stdlib-best",
                   "stdlib-makefile", "asyncio-streams", "asyncio-protocol", "uvloop-streams", "uvloop-protocol", *AIO),
        ),
        Workload(
            "W4", "echo under concurrency", "requests/s", 1.0, "µs/req", 1e6,
            full={"points": (1, 10, 100), "seconds": 5.0, "msg_size": 1024},
            quick={"points": (1, 10, 100), "seconds": 0.25, "msg_size": 1024}, limit_s=60,
            impls=("c", "fastsock-server", "fastsock-server-pure", "fastsock", "fastsock-pure", "stdlib-best",
                   "threaded", "asyncio-protocol", "asyncio-streams", "asyncio-fastsock", "uvloop-protocol",
                   "uvloop-streams", "gevent", *AIO),
            kind="points",
        ),
        Workload(
            "W5", "pipelined framed RPC under concurrency", "requests/s", 1.0, "µs/req", 1e6,
            full={"points": (10, 100), "seconds": 5.0, "warmup_s": 1.0, "depth": 16, "payload": 64},
            quick={"points": (10, 100), "seconds": 0.1, "warmup_s": 0.05, "depth": 16, "payload": 64}, limit_s=60,
            impls=("c", "fastsock-server", "fastsock-server-batch", "fastsock-server-pure", "stdlib-best",
                   "threaded", "asyncio-protocol", "asyncio-streams", "asyncio-fastsock", "uvloop-protocol",
                   "uvloop-streams", "gevent", *AIO),
            kind="points",
        ),
        Workload(
            "M1", "idle connections", "KiB/conn", 1.0, "µs/conn", 1e6,
            full={"conns": 10_000, "warmup_conns": 16}, quick={"conns": 10_000, "warmup_conns": 16}, limit_s=90,
            impls=("c", "fastsock-server", "fastsock-server-pure", "stdlib-best", "asyncio-protocol",
                   "uvloop-protocol"),
            kind="memory", c_program="w4", quick_repeat=1,
        ),
        Workload(
            # requests: redis-benchmark -n (per test; -t ping,set,get runs 4 tests: PING_INLINE,
            # PING_MBULK, SET, GET); seconds: wrk -d (whole seconds, at least 1)
            "W6", "real protocols, real clients", "requests/s", 1.0, "µs/req", 1e6,
            full={"requests": 300_000, "resp_conns": 50, "pipeline": 16, "seconds": 5, "http_conns": 100},
            quick={"requests": 25_000, "resp_conns": 50, "pipeline": 16, "seconds": 1, "http_conns": 100},
            limit_s=120,
            impls=("c", "fastsock-server", "fastsock-server-pure", "stdlib-best", "asyncio-protocol",
                   "uvloop-protocol"),
            kind="tool", variants=("resp", "http"),
        ),
    ]
}

# W4's "stdlib best" is the selectors loop; labels that differ per workload.
LABEL_OVERRIDES = {("W4", "stdlib-best"): "stdlib selectors (best)", ("W4", "fastsock"): "fastsock Selector (C)",
                   ("W4", "fastsock-pure"): "fastsock Selector (python)",
                   ("W5", "stdlib-best"): "stdlib selectors + bytearray (best)",
                   ("M1", "stdlib-best"): "stdlib selectors",
                   ("M1", "c"): "C reference (epoll)",
                   ("W3", "fastsock"): "fastsock (C) read_frames",
                   ("W6", "stdlib-best"): "stdlib selectors",
                   ("W6-resp", "c"): "redis-server (C reference)",
                   ("W6-http", "c"): "nginx (C reference)"}


def label(table: str, impl: str) -> str:
    """The row label of `impl` in a table: `table` is a workload ("W4") or a case key
    ("W2-same-core", "W6-resp"); a label given for the case's variant wins over the workload's."""
    table = table.removesuffix("-same-core")
    return LABEL_OVERRIDES.get((table, impl)) or LABEL_OVERRIDES.get((table.split("-")[0], impl), IMPLS[impl].label)
