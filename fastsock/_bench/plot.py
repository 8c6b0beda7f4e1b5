"""Bar charts per workload (matplotlib, optional): fastsock highlighted, a line at the C reference."""

from __future__ import annotations

import textwrap
from typing import Any

from .runner import Plan
from .spec import IMPLS, REFERENCE, WORKLOADS, label

MISSING = ("--plot needs matplotlib, which is not installed. Install it with "
           "pip install 'fastsock[bench]' (or pip install matplotlib), or drop --plot.")


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(plan: Plan, summary: dict[str, Any], path: str, title: str) -> None:
    """Write one PNG with a bar chart per case (and per connection count for W4 and W5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    from .report import fmt_value

    panels = []
    for case in plan.cases:
        for point, table in summary[case.key].items():
            if table:
                panels.append((case, point, table))
    if not panels:
        raise ValueError("nothing to plot: no implementation produced figures")
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    lines = textwrap.wrap(title, width=75 * cols)
    title_in = 0.18 * len(lines) + 0.25  # inches kept for the title
    height = 5.0 * rows + title_in
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, height), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (case, point, table) in zip(axes.flat, panels):
        wl = WORKLOADS[case.workload]
        impls = [i for i in table if i != REFERENCE]
        impls.sort(key=lambda i: table[i]["median"])
        values = [table[i]["median"] for i in impls]
        errs = [[table[i]["median"] - table[i]["min"] for i in impls],
                [table[i]["max"] - table[i]["median"] for i in impls]]
        colors = ["#d9480f" if IMPLS[i].fastsock else "#868e96" for i in impls]
        ax.barh([label(case.key, i) for i in impls], values, xerr=errs, color=colors, capsize=2)
        right = max(max(table[i]["max"] for i in table), 1e-9)
        left = min(0.0, min(table[i]["min"] for i in table) * 1.06)  # M1's RSS can shrink
        if REFERENCE in table:
            ax.axvline(table[REFERENCE]["median"], color="#1c7ed6", linestyle="--", label=label(case.key, REFERENCE))
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlim(left, right * 1.06)
        where = "same core" if case.placement == "same" else "2 cores"
        conns = f", {point} connections" if point is not None else ""
        variant = f" {case.variant.upper()}" if case.variant else ""
        ax.set_title(f"{wl.key} {wl.name}{variant}{conns} ({where})", fontsize=9)
        better = "; lower is better" if wl.kind == "memory" else ""
        ax.set_xlabel(f"{wl.metric} (median, bars: min-max{better})", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos, u=wl.metric: fmt_value(x, u) if x else "0"))
    fig.suptitle("\n".join(lines), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - title_in / height))
    fig.savefig(path, dpi=110)
    plt.close(fig)
