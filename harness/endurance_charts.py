"""The endurance series as charts for the Allure report, each a 1000x500 PNG drawn like nights.png (harness/report.py):
TTFT over time (p50 and p99 per interval), failures per interval by kind, memory per process, and the pool's keys and
bytes. The same series gives the same bytes."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

from harness.endurance import MIB, Interval

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:cyan", "tab:red", "tab:olive")


def _png(title: str, ylabel: str, draw: Callable, warmup_s: float | None) -> bytes:
    from matplotlib.figure import Figure  # imported here: slow to import, and only the charts need it

    fig = Figure(figsize=(10, 5), dpi=100, layout="constrained")
    ax = fig.subplots()
    drew = draw(ax)
    if warmup_s:
        ax.axvline(warmup_s, color="dimgray", linestyle="dotted", linewidth=1)
        ax.annotate("end of warm-up", (warmup_s, 0), xytext=(3, 3), textcoords="offset points", fontsize=8,
                    color="dimgray", xycoords=("data", "axes fraction"))
    if not drew:
        ax.text(0.5, 0.5, "nothing recorded", transform=ax.transAxes, ha="center", fontsize=10, color="dimgray",
                style="italic")
    else:
        ax.legend(fontsize=9, loc="upper left")
    ax.set_xlabel("seconds since the traffic started", fontsize=10)
    ax.set_ylabel(ylabel, fontsize=10)
    ax.set_title(title, fontsize=12)
    ax.grid(axis="y", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: bytes depend on the data only
    return buf.getvalue()


def ttft_png(rows: Sequence[Interval], title: str, warmup_s: float | None = None) -> bytes:
    def draw(ax) -> bool:
        shown = False
        for key, label, color in (("ttft_p50_s", "p50", COLORS[0]), ("ttft_p99_s", "p99", COLORS[1])):
            pts = [(x.end_s, getattr(x, key) * 1000) for x in rows if getattr(x, key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker=".", color=color, label=f"TTFT {label} per interval")
                shown = True
        return shown

    return _png(title, "TTFT (ms)", draw, warmup_s)


def failures_png(rows: Sequence[Interval], title: str) -> bytes:
    """Failed requests by kind (HTTP status, timeout, ...), connector failure lines and the master's failure counters,
    per interval."""
    def draw(ax) -> bool:
        series: dict[str, list[tuple[float, float]]] = {}
        for x in rows:
            for kind, n in x.failed.items():
                series.setdefault(f"requests {kind}", []).append((x.end_s, n))
            lines = sum(n for counts in x.connector_failures.values() for n in counts.values())
            if lines:
                series.setdefault("connector failure lines", []).append((x.end_s, lines))
            master = sum(x.master_failures.values())
            if master:
                series.setdefault("master failure counters", []).append((x.end_s, master))
        for i, (name, pts) in enumerate(sorted(series.items())):
            ax.plot(*zip(*pts), marker="o", linestyle="none", color=COLORS[i % len(COLORS)], label=name)
        return bool(series)

    return _png(title, "per interval", draw, None)


def memory_png(rows: Sequence[Interval], title: str, warmup_s: float | None = None) -> bytes:
    def draw(ax) -> bool:
        names = sorted({n for x in rows for n in x.rss_bytes})
        for i, name in enumerate(names):
            pts = [(x.end_s, x.rss_bytes[name] / MIB) for x in rows if name in x.rss_bytes]
            ax.plot(*zip(*pts), color=COLORS[i % len(COLORS)], label=f"{name} RSS")
        return bool(names)

    return _png(title, "MiB", draw, warmup_s)


def pool_png(rows: Sequence[Interval], title: str) -> bytes:
    """The pool's keys (left axis) and allocated MiB (right axis), with evictions per interval."""
    def draw(ax) -> bool:
        keys = [(x.end_s, x.pool_keys) for x in rows if x.pool_keys is not None]
        if not keys:
            return False
        ax.plot(*zip(*keys), color=COLORS[0], label="keys (master_key_count)")
        evicted = [(x.end_s, x.evicted_keys) for x in rows if x.evicted_keys]
        if evicted:
            ax.plot(*zip(*evicted), marker="x", linestyle="none", color=COLORS[3], label="keys evicted in the interval")
        right = ax.twinx()
        mib = [(x.end_s, x.pool_bytes / MIB) for x in rows if x.pool_bytes is not None]
        right.plot(*zip(*mib), color=COLORS[1], linestyle="dashed", label="MiB allocated (master_allocated_bytes)")
        right.set_ylabel("MiB", fontsize=10)
        right.legend(fontsize=9, loc="upper right")
        return True

    return _png(title, "keys", draw, None)


def charts(rows: Sequence[Interval], target: str, warmup_s: float) -> dict[str, bytes]:
    """The four charts by file name."""
    return {"endurance-ttft.png": ttft_png(rows, f"{target}: TTFT per interval", warmup_s),
            "endurance-failures.png": failures_png(rows, f"{target}: failures per interval"),
            "endurance-memory.png": memory_png(rows, f"{target}: memory per process", warmup_s),
            "endurance-pool.png": pool_png(rows, f"{target}: the pool")}
