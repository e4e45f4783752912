"""The endurance stage's series and gates: what sustained traffic against both instances recorded (one Sent per
request, one Interval row per `endurance.interval_s`, one ProbeRow per correctness probe under load) and the five
gates judged over them. Pure: nothing here talks to a deployment (harness/endurance_traffic.py does), so every gate
is unit-tested on synthetic series (tests/unit/test_endurance.py), each with a red and a green case.

Each gate that fails names the first moment it failed (seconds since the traffic started, and wall time) and the
evidence around that moment: the requests and interval rows near it, with the connector's failure lines and the
master's failure counters those rows carry.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

MIB = 2**20
KINDS = ("miss", "local_hit", "cross_instance_hit", "turn")  # what the traffic plan sends (endurance_traffic.py)

# --- duration -------------------------------------------------------------------------------------------------

_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_UNIT_S = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> float:
    """'10m', '90s', '1h', '1h30m' -> seconds. Anything else raises ValueError with what is accepted."""
    compact = text.strip().lower().replace(" ", "")
    parts = _PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"--duration {text!r} is not a duration: give a number with a unit, h, m or s "
                         "(e.g. 90s, 10m, 1h, 1h30m)")
    seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"--duration {text!r} is no time at all: give more than 0 s")
    return seconds


# --- what was recorded ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One request of the traffic, as it ended."""

    at_s: float  # sent, seconds since the traffic started
    wall: float  # sent, epoch seconds
    instance: str
    kind: str  # one of KINDS
    status: str  # "ok" or the failure kind of harness/bench.py (http_500, timeout, connection, ...)
    ttft_s: float | None  # None unless ok
    latency_s: float
    cached_tokens: int | None = None
    error: str | None = None
    job: int = 0  # the job (a conversation's turns share one)

    @property
    def first_token_s(self) -> float | None:
        return None if self.ttft_s is None else self.at_s + self.ttft_s

    @property
    def end_s(self) -> float:
        return self.at_s + self.latency_s

    @property
    def failed(self) -> bool:
        return self.status != "ok"


@dataclass
class Interval:
    """One row of the series: what happened in [start_s, end_s) and what the deployment read at its end."""

    start_s: float
    end_s: float
    wall: float  # epoch seconds at end_s
    requests: int = 0  # ended in the interval
    failed: dict[str, int] = field(default_factory=dict)  # by status
    ttft_p50_s: float | None = None
    ttft_p99_s: float | None = None
    connector_failures: dict[str, dict[str, int]] = field(default_factory=dict)  # instance -> pattern -> lines
    connector_lines: list[str] = field(default_factory=list)  # the first few, as evidence
    master_failures: dict[str, float] = field(default_factory=dict)  # counter -> its increase in the interval
    master_up: bool = True  # its /metrics answered
    pool_keys: float | None = None
    pool_bytes: float | None = None
    evicted_keys: float | None = None  # in the interval
    rss_bytes: dict[str, float] = field(default_factory=dict)  # process name -> RSS of its process group
    kv_usage: dict[str, float] = field(default_factory=dict)  # instance -> vllm:kv_cache_usage_perc (0..1)
    in_flight: int = 0
    oldest_wait_s: float = 0.0  # the longest an in-flight request had waited for its first token

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProbeRow:
    """One correctness probe sent under load: a pool hit on the peer against a local hit on the first instance."""

    at_s: float
    wall: float
    verdict: str  # equal, differs, inconclusive, error (harness/probe.py judge, or a ProbeError)
    closeness: str | None = None  # local hit against pool hit as check_logprobs_close sees it: equal, close, far
    detail: dict = field(default_factory=dict)


@dataclass
class GateResult:
    name: str
    field: str  # the endurance field that bounds it
    ok: bool
    value: float | None
    bound: float
    message: str  # one line: the value against its bound, and on a failure the first moment
    first_at_s: float | None = None
    first_wall: float | None = None
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# --- statistics over the series ---------------------------------------------------------------------------------


def p(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (numpy's linear interpolation, as harness/bench.py), None of nothing."""
    return float(np.percentile(list(values), q)) if values else None


def ttft_stats(records: Sequence[Sent], lo_s: float, hi_s: float) -> tuple[float | None, float | None]:
    """(p50, p99) TTFT of the successful requests sent in [lo_s, hi_s)."""
    ttfts = [r.ttft_s for r in records if lo_s <= r.at_s < hi_s and r.ttft_s is not None]
    return p(ttfts, 50), p(ttfts, 99)


def slope_per_s(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t, y) points; None for fewer than two distinct times."""
    if len(points) < 2:
        return None
    ts, ys = [t for t, _ in points], [y for _, y in points]
    mt, my = sum(ts) / len(ts), sum(ys) / len(ys)
    sxx = sum((t - mt) ** 2 for t in ts)
    if sxx == 0:
        return None
    return sum((t - mt) * (y - my) for t, y in points) / sxx


def mib_per_min(bytes_per_s: float) -> float:
    return bytes_per_s * 60 / MIB


@dataclass(frozen=True)
class Stall:
    """A silence on an instance: a request waited for its first token while the instance gave no first token and
    finished no request, from begin_s to end_s (seconds since the traffic started)."""

    instance: str
    begin_s: float
    end_s: float
    request_at_s: float  # when the waiting request was sent

    @property
    def seconds(self) -> float:
        return self.end_s - self.begin_s


def stalls(records: Sequence[Sent], stall_s: float) -> list[Stall]:
    """Every silence of at least stall_s: requests in flight and no first token (nor a finished request) on their
    instance for that long. A request queued behind others that progress is no stall; one instance's silence is one
    Stall however many requests waited in it. In order of begin_s."""
    progress: dict[str, list[float]] = {}
    for r in records:
        marks = progress.setdefault(r.instance, [])
        if r.first_token_s is not None:
            marks.append(r.first_token_s)
        if not r.failed:
            marks.append(r.end_s)
    found: dict[str, list[Stall]] = {}
    for r in records:
        waited_until = r.first_token_s if r.first_token_s is not None else r.end_s
        if waited_until - r.at_s < stall_s:
            continue
        inside = sorted(t for t in progress.get(r.instance, []) if r.at_s < t < waited_until)
        bounds = [r.at_s, *inside, waited_until]
        for a, b in zip(bounds, bounds[1:]):
            if b - a >= stall_s:
                found.setdefault(r.instance, []).append(Stall(r.instance, a, b, r.at_s))
    merged: list[Stall] = []
    for instance, items in found.items():
        items.sort(key=lambda s: s.begin_s)
        current = items[0]
        for s in items[1:]:
            if s.begin_s <= current.end_s:  # the same silence seen by another waiting request
                current = Stall(instance, current.begin_s, max(current.end_s, s.end_s), current.request_at_s)
            else:
                merged.append(current)
                current = s
        merged.append(current)
    return sorted(merged, key=lambda s: s.begin_s)


def failure_counts(log: str, patterns: Sequence[str]) -> tuple[dict[str, int], list[str]]:
    """({pattern: lines matching it}, the matching lines) of a log's text: a line counts for each pattern it
    matches (harness/failure_lines.py's patterns)."""
    compiled = [(pat, re.compile(pat)) for pat in patterns]
    counts: dict[str, int] = {}
    lines: list[str] = []
    for line in log.splitlines():
        hit = [pat for pat, rx in compiled if rx.search(line)]
        for pat in hit:
            counts[pat] = counts.get(pat, 0) + 1
        if hit:
            lines.append(line.strip())
    return counts, lines


# The master's failure counters: Mooncake 0.3.13's `master_<op>_failures_total` (recorded in
# tests/unit/recordings/mooncake-0.3.13.post1/); 0.3.7.post2 lists one only once it moved.
MASTER_FAILURE = re.compile(r"^master_\w+_failures(_total)?$")


def master_failures(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """How each master failure counter moved between two readings ({name: total}), the ones that moved. A counter
    that went down (a restarted master counts from 0) counts from 0."""
    out = {}
    for name, value in after.items():
        if MASTER_FAILURE.match(name):
            old = before.get(name, 0.0)
            moved = value - old if value >= old else value
            if moved:
                out[name] = moved
    return out


# --- evidence around a moment -----------------------------------------------------------------------------------


def wall_text(wall: float | None) -> str:
    return "-" if wall is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(wall)) + " UTC"


def wall_at(started_wall: float, at_s: float) -> float:
    return started_wall + at_s


def records_around(records: Sequence[Sent], at_s: float, span_s: float, limit: int = 12) -> list[dict]:
    """The requests sent within span_s of at_s, failures first, as dicts."""
    near = [r for r in records if abs(r.at_s - at_s) <= span_s]
    near.sort(key=lambda r: (not r.failed, abs(r.at_s - at_s)))
    return [asdict(r) for r in near[:limit]]


def intervals_around(intervals: Sequence[Interval], at_s: float, each_side: int = 1) -> list[dict]:
    """The interval row holding at_s and each_side rows before and after it."""
    i = next((k for k, x in enumerate(intervals) if x.start_s <= at_s < x.end_s), len(intervals) - 1)
    return [x.to_dict() for x in intervals[max(0, i - each_side): i + each_side + 1]]


def cause(rows: Sequence[dict]) -> str:
    """What the interval rows around a moment say of the deployment: the master unreachable or restarted (its key
    count fell), its failure counters, the connector's failure lines. '' when they say nothing."""
    said = []
    down = [r for r in rows if not r["master_up"]]
    if down:
        at = ", ".join(f"{r['end_s']:.0f} s" for r in down)
        said.append(f"the master's /metrics did not answer at {at}")
    keys = [(r["end_s"], r["pool_keys"]) for r in rows if r["pool_keys"] is not None]
    for (_, k0), (t1, k1) in zip(keys, keys[1:]):
        if k1 < k0 / 2:
            said.append(f"the pool's keys fell from {k0:.0f} to {k1:.0f} by {t1:.0f} s (a restarted master starts "
                        "empty)")
    failures: dict[str, float] = {}
    for r in rows:
        for name, n in r["master_failures"].items():
            failures[name] = failures.get(name, 0) + n
    if failures:
        said.append("master failure counters " + ", ".join(f"{k} +{v:.0f}" for k, v in sorted(failures.items())))
    lines = [line for r in rows for line in r["connector_lines"]]
    if lines:
        said.append(f"{len(lines)} connector failure line(s), first: {lines[0][:200]!r}")
    return "; ".join(said)


# --- the gates --------------------------------------------------------------------------------------------------


def _at(started_wall: float, at_s: float) -> str:
    return f"{at_s:.0f} s into the run ({wall_text(wall_at(started_wall, at_s))})"


def error_budget(records: Sequence[Sent], intervals: Sequence[Interval], per_1000: float,
                 started_wall: float) -> GateResult:
    """Failed requests per 1000 sent, against endurance.max_failed_per_1000. The first moment is the failure that
    took the count past what the budget allows for the whole run."""
    name, fld = "error budget", "endurance.max_failed_per_1000"
    if not records:
        return GateResult(name, fld, False, None, per_1000, f"{fld}: no request was sent: nothing to judge")
    failed = sorted((r for r in records if r.failed), key=lambda r: r.at_s)
    rate = 1000 * len(failed) / len(records)
    kinds: dict[str, int] = {}
    for r in failed:
        kinds[r.status] = kinds.get(r.status, 0) + 1
    said = f"{rate:.1f} failed requests per 1000 ({len(failed)} of {len(records)})"
    if rate <= per_1000:
        return GateResult(name, fld, True, rate, per_1000, f"{fld}: {said}, within {per_1000:g}")
    allowed = math.floor(per_1000 * len(records) / 1000)
    over = failed[allowed]
    rows = intervals_around(intervals, over.at_s, each_side=2)  # a restart's fall of keys comes a row or two before
    why = cause(rows)
    by_kind = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items(), key=lambda x: -x[1]))
    first = failed[0]
    message = (f"{fld}: {said}, more than {per_1000:g}; by kind: {by_kind}; over the budget from failure "
               f"{allowed + 1} at {_at(started_wall, over.at_s)} on {over.instance} ({over.kind}: {over.status} "
               f"{(over.error or '')[:200]}); the first failure at {first.at_s:.0f} s"
               + (f"; around it: {why}" if why else ""))
    return GateResult(name, fld, False, rate, per_1000, message, over.at_s, wall_at(started_wall, over.at_s),
                      {"records": records_around(records, over.at_s, 15), "intervals": rows})


def no_stall(records: Sequence[Sent], intervals: Sequence[Interval], stall_s: float,
             started_wall: float) -> GateResult:
    """No silence of endurance.stall_s or more on any instance (stalls())."""
    name, fld = "no stall", "endurance.stall_s"
    found = stalls(records, stall_s)
    if not found:
        longest = max((r.ttft_s or 0.0 for r in records), default=0.0)
        return GateResult(name, fld, True, 0, stall_s, f"{fld}: no instance was silent for {stall_s:g} s with a "
                          f"request waiting (the longest TTFT: {longest:.1f} s)")
    s = found[0]
    rows = intervals_around(intervals, s.begin_s + stall_s)
    why = cause(rows)
    message = (f"{fld}: {len(found)} stall(s); the first on {s.instance}: requests in flight and no first token for "
               f"{s.seconds:.0f} s from {_at(started_wall, s.begin_s)}, past the bound of {stall_s:g} s at "
               f"{s.begin_s + stall_s:.0f} s" + (f"; around it: {why}" if why else ""))
    return GateResult(name, fld, False, s.seconds, stall_s, message, s.begin_s, wall_at(started_wall, s.begin_s),
                      {"stalls": [asdict(x) for x in found], "records": records_around(records, s.begin_s, stall_s),
                       "intervals": rows})


def memory_growth(intervals: Sequence[Interval], warmup_s: float, bound_mib_per_min: float,
                  started_wall: float) -> GateResult:
    """Each process's RSS after warm-up: its least-squares slope in MiB/min against endurance.max_memory_slope_mib_
    per_min. The first moment is its first sample above the line from its first post-warm-up sample at the bound's
    slope."""
    name, fld = "memory growth", "endurance.max_memory_slope_mib_per_min"
    series: dict[str, list[tuple[float, float]]] = {}
    for x in intervals:
        if x.end_s >= warmup_s:
            for proc, rss in x.rss_bytes.items():
                series.setdefault(proc, []).append((x.end_s, rss))
    slopes = {proc: slope_per_s(pts) for proc, pts in series.items()}
    judged = {proc: mib_per_min(s) for proc, s in slopes.items() if s is not None}
    if not judged:
        return GateResult(name, fld, False, None, bound_mib_per_min,
                          f"{fld}: fewer than two memory samples after the warm-up ({warmup_s:g} s): nothing to "
                          "judge (a run shorter than its warm-up, or no process's RSS could be read)")
    worst = max(judged, key=judged.get)
    said = ", ".join(f"{proc} {v:+.2f}" for proc, v in judged.items())
    if judged[worst] <= bound_mib_per_min:
        return GateResult(name, fld, True, judged[worst], bound_mib_per_min,
                          f"{fld}: RSS slope after the warm-up in MiB/min: {said}; within {bound_mib_per_min:g}")
    pts = series[worst]
    t0, y0 = pts[0]
    above = next(((t, y) for t, y in pts if y > y0 + bound_mib_per_min * MIB * (t - t0) / 60), pts[-1])
    # An instance's pool segment is its own memory, touched as keys are put: a pool still filling grows its RSS.
    pool = [x.pool_bytes for x in intervals if x.end_s >= t0 and x.pool_bytes is not None]
    filling = (f"; meanwhile the pool's allocated bytes went from {pool[0] / MIB:.0f} to {pool[-1] / MIB:.0f} MiB "
               "(a pool still filling touches its segments' pages: a longer endurance.warmup_s)"
               if len(pool) > 1 and pool[-1] > pool[0] else "")
    message = (f"{fld}: {worst}'s RSS grew {judged[worst]:+.2f} MiB/min after the warm-up ({warmup_s:g} s), more "
               f"than {bound_mib_per_min:g} (all: {said}); from {y0 / MIB:.0f} MiB at {t0:.0f} s to "
               f"{pts[-1][1] / MIB:.0f} MiB at {pts[-1][0]:.0f} s; above the bound's line from "
               f"{_at(started_wall, above[0])} ({above[1] / MIB:.0f} MiB){filling}")
    return GateResult(name, fld, False, judged[worst], bound_mib_per_min, message, above[0],
                      wall_at(started_wall, above[0]),
                      {"series_mib": {proc: [(t, round(y / MIB, 1)) for t, y in p] for proc, p in series.items()},
                       "intervals": intervals_around(intervals, above[0])})


def ttft_drift(records: Sequence[Sent], intervals: Sequence[Interval], warmup_s: float, window_s: float,
               bound: float, started_wall: float) -> GateResult:
    """TTFT p99 of the last window_s against the first window_s after warm-up, as a ratio against endurance.
    max_p99_drift. The first moment is the first interval after that first window whose p99 was past the bound."""
    name, fld = "TTFT p99 drift", "endurance.max_p99_drift"
    end = max((r.at_s for r in records), default=0.0)
    if end - warmup_s < 2 * window_s:
        return GateResult(name, fld, False, None, bound,
                          f"{fld}: the traffic after the warm-up ({warmup_s:g} s) lasted {max(0.0, end - warmup_s):.0f}"
                          f" s, less than two windows of endurance.drift_window_s {window_s:g} s: nothing to judge")
    _, first = ttft_stats(records, warmup_s, warmup_s + window_s)
    _, last = ttft_stats(records, end - window_s, end + 1e-9)
    if first is None or last is None:
        which = "first" if first is None else "last"
        return GateResult(name, fld, False, None, bound, f"{fld}: no request succeeded in the {which} window of "
                          f"{window_s:g} s: no p99 to compare")
    drift = last / first
    said = f"p99 TTFT {last * 1000:.0f} ms in the last {window_s:g} s = {drift:.2f} x {first * 1000:.0f} ms in the " \
           f"first {window_s:g} s after the warm-up"
    if drift <= bound:
        return GateResult(name, fld, True, drift, bound, f"{fld}: {said}, within {bound:g}")
    late = [x for x in intervals if x.start_s >= warmup_s + window_s and x.ttft_p99_s is not None]
    over = next((x for x in late if x.ttft_p99_s > bound * first), late[-1] if late else None)
    at = over.start_s if over else end - window_s
    message = (f"{fld}: {said}, more than {bound:g}; an interval's p99 first passed {bound:g} x "
               f"{first * 1000:.0f} ms at {_at(started_wall, at)}")
    return GateResult(name, fld, False, drift, bound, message, at, wall_at(started_wall, at),
                      {"intervals": intervals_around(intervals, at), "records": records_around(records, at, 10)})


def probes_equal(probes: Sequence[ProbeRow], accept: Sequence[str], started_wall: float) -> GateResult:
    """Every probe under load whose two hits compare (equal or differs) has a pool hit with the local hit's greedy
    tokens (accept: ("equal",), or also "close": check_logprobs_close), and at least one compared."""
    name, fld = "probes equal", "endurance.probe_accept"
    judged = [x for x in probes if x.verdict in ("equal", "differs")]
    bad = [x for x in judged if not (x.verdict == "equal" or ("close" in accept and x.closeness == "close"))]
    others = {v: sum(x.verdict == v for x in probes) for v in ("inconclusive", "error")}
    tail = f" ({others['inconclusive']} inconclusive, {others['error']} could not be sent)"
    if not judged:
        return GateResult(name, fld, False, 0, len(probes),
                          f"{fld}: none of {len(probes)} probes under load compared a pool hit with a local hit"
                          f"{tail}: nothing proves the pool's KV right under load",
                          evidence={"probes": [asdict(x) for x in probes]})
    if not bad:
        return GateResult(name, fld, True, len(judged), len(judged),
                          f"{fld}: {len(judged)} of {len(judged)} probes under load: the pool hit gave the local hit's "
                          f"tokens{tail}")
    x = bad[0]
    message = (f"{fld}: {len(bad)} of {len(judged)} probes under load gave other greedy tokens from the pool than from "
               f"the local cache{tail}; the first at {_at(started_wall, x.at_s)}: differs at token "
               f"{x.detail.get('position')} (local vs pool: {x.closeness})")
    return GateResult(name, fld, False, len(judged) - len(bad), len(judged), message, x.at_s,
                      wall_at(started_wall, x.at_s), {"probes": [asdict(y) for y in bad[:5]]})


def interval_row(records: Sequence[Sent], start_s: float, end_s: float, wall: float) -> Interval:
    """The request side of an interval row: the requests that ended in [start_s, end_s), their failures by kind and
    TTFT p50/p99 (the deployment side is filled in by whoever read it)."""
    ended = [r for r in records if start_s <= r.end_s < end_s]
    failed: dict[str, int] = {}
    for r in ended:
        if r.failed:
            failed[r.status] = failed.get(r.status, 0) + 1
    ttfts = [r.ttft_s for r in ended if r.ttft_s is not None]
    return Interval(start_s=start_s, end_s=end_s, wall=wall, requests=len(ended), failed=failed,
                    ttft_p50_s=p(ttfts, 50), ttft_p99_s=p(ttfts, 99))
