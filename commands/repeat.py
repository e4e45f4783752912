"""Verdict truth: N healthy acceptance runs in a row on each kernel path, and the spread of what they judged.

    python -m commands.repeat 10 --isa default --isa avx2      (tox -e repeat -- 10 --isa default --isa avx2)

A verdict that is green on one CPU only is not done: machines differ (AVX2 only, AVX-512, AMX) and so do
their kernels and rounding. `--isa avx2` caps the instances' kernels (ATEN_CPU_CAPABILITY for torch's,
ONEDNN_MAX_CPU_ISA for oneDNN's) through their environment in a copy of the target; each path's kernels
are reported as the image sees them with that environment. Every run is the real `pytest -m acceptance`;
reports/repeat.json is rewritten after each run with its ratios, correctness verdicts and timings, and the
spread per path. Exits 0 only when every run was green.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import kit
from harness.config import ROOT, ConfigError, load_target, resolve_target_path
from harness.interrupts import run_to_teardown, unwind_on_sigterm
from harness.kernel_paths import CAPS, capped_target, kernels
from harness.progress import logger
from harness.results_file import RunResults

OUT = ROOT / "reports" / "repeat"  # capped targets, each run's JUnit and log

log = logger("repeat")


def failures(junit: Path) -> dict[str, str]:
    """Failing test ids with the first line of their message."""
    if not junit.exists():
        return {"(no junit)": "the run wrote no JUnit file"}
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        bad = next((c for c in case if c.tag in ("failure", "error")), None)
        if bad is not None:
            text = (bad.get("message") or bad.text or "").strip()
            test = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
            out[test] = text.splitlines()[0] if text else ""
    return out


def one_run(target_file: Path, name: str, label: str, extra: list[str]) -> dict:
    """One `pytest -m acceptance` run and what it judged, from its results.json and JUnit."""
    junit, log = OUT / f"{label}.xml", OUT / f"{label}.log"
    before = {p.name for p in (ROOT / "reports").glob(f"{name}-*")}
    start = time.monotonic()
    with log.open("w") as out:
        rc = run_to_teardown([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-m", "acceptance",
                              f"--target={target_file}", "-p", "no:cacheprovider", f"--junitxml={junit}", *extra],
                             cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    new = sorted(p for p in (ROOT / "reports").glob(f"{name}-*") if p.name not in before)
    file = new[-1] / "results.json" if new else None
    res = RunResults.read(file) if file and file.exists() else None
    probe = res.correctness if res else None
    miss = probe.miss_control if probe else None
    return {"label": label, "rc": rc, "green": rc == 0, "seconds": round(seconds, 1),
            "run_dir": new[-1].name if new else None, "log": str(log.relative_to(ROOT)),
            "failures": failures(junit),
            "ratios": {c.name: c.actual_ratio for c in res.comparisons} if res else {},
            "mean_ttft_s": {s: v.stats.mean for s, v in res.steps.items()} if res else {},
            "correctness": probe.summary.model_dump() if probe else None,
            "probe_seconds": probe.seconds if probe else None,
            "miss_control": miss.model_dump() if miss else None, "timings": res.timings if res else {}}


def spread(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def summarize(runs: list[dict]) -> dict:
    names = sorted({n for r in runs for n in r["ratios"]})
    counts = [r["correctness"] or {} for r in runs]
    return {
        "runs": len(runs), "green": sum(r["green"] for r in runs),
        "ratios": {n: spread([r["ratios"].get(n) for r in runs]) for n in names},
        "mean_ttft_s": {s: spread([r["mean_ttft_s"].get(s) for r in runs])
                        for s in sorted({s for r in runs for s in r["mean_ttft_s"]})},
        "correctness": {k: sum(c.get(k, 0) for c in counts) for k in
                        ("checked", "equal", "differs", "inconclusive", "cold_vs_pool_equal", "cold_vs_pool_close",
                         "cold_vs_pool_far")},
        "probe_seconds": spread([r["probe_seconds"] for r in runs]),
        "run_seconds": spread([r["seconds"] for r in runs]),
    }


def main(argv: list[str] | None = None) -> int:
    unwind_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=int, nargs="?", default=10, help="runs per kernel path (default 10)")
    ap.add_argument("--isa", action="append", choices=sorted(CAPS), help="kernel path, repeatable (default: default)")
    ap.add_argument("--target", default="cpu-local")
    ap.add_argument("pytest_args", nargs="*", help="after --: more pytest arguments for every run")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("runs must be at least 1")
    try:
        target = load_target(args.target)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 4
    source = resolve_target_path(args.target)
    image = kit.ensure_kit(target)
    report: dict = {"target": target.name, "target_file": str(source), "started": time.time(), "paths": {}}
    path_file = ROOT / "reports" / "repeat.json"
    for isa in args.isa or ["default"]:
        variant = capped_target(source, isa, OUT)
        env = {**target.instances[0].env, **CAPS[isa]}
        entry = report["paths"][isa] = {"env": CAPS[isa], "kernels": kernels(image, env), "runs": []}
        log.info(f"{isa}: kernels {entry['kernels']}")
        for k in range(1, args.runs + 1):
            run = one_run(variant, target.name, f"{isa}-{k}", args.pytest_args)
            entry["runs"].append(run)
            entry["summary"] = summarize(entry["runs"])
            path_file.write_text(json.dumps(report, indent=2) + "\n")
            c = run["correctness"] or {}
            ratios = ", ".join(f"{n} {v:.3f}" for n, v in run["ratios"].items() if v is not None)
            verdict = "green" if run["green"] else "RED"
            log.info(f"{isa} run {k}/{args.runs}: {verdict} in {run['seconds']:.0f} s; {ratios}; "
                     f"probe {c.get('equal', '?')}/{c.get('checked', '?')} equal, "
                     f"{c.get('inconclusive', '?')} inconclusive, "
                     f"cold vs pool {c.get('cold_vs_pool_far', '?')} far"
                     + ("" if run["green"] else f"; failing: {run['failures']}"))
    report["finished"] = time.time()
    path_file.write_text(json.dumps(report, indent=2) + "\n")
    green = all(e["summary"]["green"] == e["summary"]["runs"] for e in report["paths"].values())
    for isa, e in report["paths"].items():
        s = e["summary"]
        log.info(f"{isa}: {s['green']}/{s['runs']} green; " + "; ".join(
                 f"{n} {v['min']:.3f}/{v['median']:.3f}/{v['max']:.3f}" for n, v in s["ratios"].items() if v)
                 + f" (min/median/max); correctness {s['correctness']}")
    log.info(f"wrote {path_file.relative_to(ROOT)}")
    return 0 if green else 1


if __name__ == "__main__":
    sys.exit(main())
