"""Tonight against the last nights: each step's TTFT statistics and each comparison's ratio of tonight's run against
a rolling baseline, the median of the same value in the last `nights.runs` comparable runs of a history folder.

The history is a folder of earlier runs' results.json files, at any depth (the Jenkinsfile copies the previous
builds'), each read through RunResults.read. A run is comparable with tonight's when results.json records the same
`target` (the target's name), the same `versions` (every package and the image, key for key) and the same
`config_sha256` (the validated target without its `nights`, `endurance` and `pool_cost` sections, so any other
change to the YAML starts a new history), and it started before tonight's run. Every other file is skipped with its
reason, never silently.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from pydantic import ValidationError

from harness.config import Nights
from harness.results_file import NightFinding, NightRun, NightSkipped, NightsRecord, RunResults

RESULTS = "results.json"


def when(started: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))


def differences(run: RunResults, tonight: RunResults) -> list[str]:
    """Why an earlier run is not comparable with tonight's: each of target, versions and config that differs."""
    out = []
    if run.target != tonight.target:
        out.append(f"target {run.target}, tonight's is {tonight.target}")
    changed = sorted(k for k in run.versions.keys() | tonight.versions.keys()
                     if run.versions.get(k) != tonight.versions.get(k))
    if changed:
        out.append("versions differ: " + ", ".join(f"{k} {run.versions.get(k, 'absent')} (tonight "
                                                   f"{tonight.versions.get(k, 'absent')})" for k in changed))
    if run.config_sha256 != tonight.config_sha256:
        out.append(f"config sha256 {run.config_sha256[:12]}, tonight's is {tonight.config_sha256[:12]} (another "
                   "target YAML)")
    if not out and run.started >= tonight.started:
        out.append(f"started {when(run.started)}, not before tonight's run ({when(tonight.started)})")
    return out


def read_history(history: Path, tonight: RunResults) -> tuple[list[tuple[str, RunResults]], list[NightSkipped]]:
    """The folder's comparable runs, oldest first, each with its file relative to the folder; and the skipped files."""
    comparable: list[tuple[str, RunResults]] = []
    skipped: list[NightSkipped] = []
    for path in sorted(history.rglob(RESULTS)):
        file = path.relative_to(history).as_posix()
        try:
            run = RunResults.read(path)
        except (OSError, ValueError, ValidationError) as e:  # JSONDecodeError is a ValueError
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            skipped.append(NightSkipped(file=file, reason=f"unreadable: {first}"))
            continue
        why = differences(run, tonight)
        if why:
            skipped.append(NightSkipped(file=file, reason="; ".join(why)))
        else:
            comparable.append((file, run))
    comparable.sort(key=lambda fr: fr[1].started)
    return comparable, skipped


def _finding(kind: str, name: str, statistic: str, tonight: float | None, measured: list[tuple[str, float]],
             nights: Nights, fraction: float, higher_is_worse: bool = True) -> NightFinding:
    runs, values = [f for f, _ in measured], [v for _, v in measured]
    if tonight is None or len(values) < nights.min_runs:
        return NightFinding(kind=kind, name=name, statistic=statistic, tonight=tonight, baseline=None, limit=None,
                            runs=runs, values=values, verdict="not compared")
    baseline = statistics.median(values)
    limit = baseline * (1 + fraction) if higher_is_worse else baseline * (1 - fraction)
    worse = tonight > limit if higher_is_worse else tonight < limit
    return NightFinding(kind=kind, name=name, statistic=statistic, tonight=tonight, baseline=baseline, limit=limit,
                        runs=runs, values=values, verdict="regression" if worse else "pass")


def compare(tonight: RunResults, history: Path, nights: Nights, history_as_given: str | None = None) -> NightsRecord:
    """Tonight's steps and comparisons against the median of the last `nights.runs` comparable runs of `history`.
    Fewer comparable runs than `nights.min_runs`: nothing is compared and `not_compared` says why."""
    comparable, skipped = read_history(history, tonight)
    base = comparable[-nights.runs:]
    record = NightsRecord(history=history_as_given or str(history),
                          runs=[NightRun(file=f, started=r.started) for f, r in base], skipped=skipped,
                          not_compared=None, findings=[])
    if len(base) < nights.min_runs:
        first = f", first: {skipped[0].file}: {skipped[0].reason}" if skipped else ""
        record.not_compared = (f"{len(comparable)} comparable run(s) in {record.history} (same target "
                               f"{tonight.target}, versions and config), fewer than nights.min_runs "
                               f"{nights.min_runs}; {len(skipped)} file(s) skipped{first}")
        return record
    for step, rec in tonight.steps.items():
        for stat in nights.statistics:
            measured = [(f, getattr(r.steps[step].stats, stat)) for f, r in base if step in r.steps]
            record.findings.append(_finding("step", step, stat, getattr(rec.stats, stat),
                                            [(f, v) for f, v in measured if v is not None], nights,
                                            nights.ttft_slower_fraction))
    rows = {row.name: row for row in tonight.comparisons}  # a comparison judged twice: its last row
    for name, row in rows.items():
        measured = []
        for f, r in base:
            theirs = {x.name: x for x in r.comparisons}.get(name)
            if theirs is not None and theirs.actual_ratio is not None:
                measured.append((f, theirs.actual_ratio))
        record.findings.append(_finding("ratio", name, row.metric, row.actual_ratio, measured, nights,
                                        nights.ratio_worse_fraction, higher_is_worse=row.operator.startswith("<")))
    return record


def _value(f: NightFinding, v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1e3:.0f} ms" if f.kind == "step" else f"{v:.3f}"


def describe(f: NightFinding, record: NightsRecord) -> str:
    """One line a person reads: the value, tonight's, the baseline, the runs it came from, the limit and its field."""
    started = {r.file: r.started for r in record.runs}
    what = (f"{f.name} {f.statistic} TTFT" if f.kind == "step" else f"{f.name} ratio ({f.statistic})")
    runs = ", ".join(f"{file} ({when(started[file])}) {_value(f, v)}" for file, v in zip(f.runs, f.values))
    if f.verdict == "not compared":
        why = "tonight has no value" if f.tonight is None else f"only {len(f.values)} baseline run(s) measured it"
        return f"{what}: not compared ({why})"
    field_name = "nights.ttft_slower_fraction" if f.kind == "step" else "nights.ratio_worse_fraction"
    change = (f.tonight / f.baseline - 1) * 100 if f.baseline else 0.0
    fraction = abs(f.limit / f.baseline - 1) if f.baseline else 0.0
    return (f"{what} tonight {_value(f, f.tonight)}, baseline {_value(f, f.baseline)} (median of {len(f.values)} "
            f"runs: {runs}), {change:+.0f}%, limit {_value(f, f.limit)} ({field_name} {fraction:.2g}): {f.verdict}")


def summary(record: NightsRecord) -> str:
    """The whole comparison as text: the baseline runs, every finding, the skipped files."""
    lines = [f"history: {record.history}"]
    if record.not_compared:
        lines.append(f"not compared: {record.not_compared}")
    lines += [f"baseline run: {r.file} ({when(r.started)})" for r in record.runs]
    lines += [describe(f, record) for f in record.findings]
    lines += [f"skipped: {s.file}: {s.reason}" for s in record.skipped]
    return "\n".join(lines) + "\n"


def regressions(record: NightsRecord) -> list[NightFinding]:
    return [f for f in record.findings if f.verdict == "regression"]
