"""Judging and recording a benchmark run: comparisons, output correctness, transfer-failure log lines,
metric evidence, and the run's results file (reports/<run>/results.json, schema below).

Schema (version 1), one object:
  schema_version, target, target_file, config_sha256, started, finished,
  versions: {name: version string},
  steps: {step: {instance, stats: {count, ok, failed, mean, median, p90, p99, min, max} (seconds),
                 server_ttft_mean_s, records: file of per-request JSON lines,
                 evidence: {instance name or "master": {metric: delta over the step}}}},
  comparisons: [{name, metric, baseline, target, operator, ratio, baseline_value, target_value,
                 actual_ratio, verdict: pass | fail | not run}],
  correctness: the correctness probe (harness/probe.py Verdict.to_dict): {num_prompts, output_len, top_logprobs,
               prompts: [{index, verdict: equal | differs | inconclusive, cached_tokens, pool_tokens, ...}],
               miss_control, seconds, summary} or null,
  transfer_failures: {instance: [log lines]},
  timings: {bring-up phase or step: wall seconds}
"""

from __future__ import annotations

import hashlib
import json
import operator
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.bench import StepResult
from harness.config import Comparison, Target
from harness.metrics import Metrics
from harness.names import THRESHOLDS

SCHEMA_VERSION = 1
OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
METRIC_STAT = {"mean_ttft": "mean", "median_ttft": "median", "p90_ttft": "p90", "p99_ttft": "p99"}
# Instance metrics kept as evidence: prefix-cache (local) and external (connector/pool) hits, TTFT histogram.
INSTANCE_EVIDENCE = ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits", "vllm:external_prefix_cache_queries",
                     "vllm:external_prefix_cache_hits", "vllm:prompt_tokens", "vllm:time_to_first_token_seconds_sum",
                     "vllm:time_to_first_token_seconds_count")


def step_evidence(before: Metrics, after: Metrics, kept: tuple[str, ...] | None = None) -> Metrics:
    """How the metrics moved over a step, one total per name: with `kept` (name prefixes), those names whether they
    moved or not; without, every series that moved."""
    moved = after.minus(before)
    return (moved.starting(kept) if kept is not None else moved.changed()).summed()


def server_mean_ttft(evidence: Metrics) -> float | None:
    """Mean TTFT of a step from vLLM's own histogram (sum and count deltas)."""
    count = evidence.total("vllm:time_to_first_token_seconds_count")
    return evidence.total("vllm:time_to_first_token_seconds_sum") / count if count else None


def evaluate(c: Comparison, steps: dict[str, StepResult]) -> dict[str, Any]:
    row: dict[str, Any] = c.model_dump() | {"baseline_value": None, "target_value": None, "actual_ratio": None}
    if c.baseline not in steps or c.target not in steps:
        return row | {"verdict": "not run"}
    stat = METRIC_STAT[c.metric]
    base, got = steps[c.baseline].stats()[stat], steps[c.target].stats()[stat]
    if not base or got is None:
        return row | {"baseline_value": base, "target_value": got, "verdict": "not run"}
    actual = got / base
    verdict = "pass" if OPERATORS[c.operator](actual, c.ratio) else "fail"
    return row | {"baseline_value": base, "target_value": got, "actual_ratio": actual, "verdict": verdict}


def describe(row: dict[str, Any]) -> str:
    """One line a person reads: what was compared, the numbers, the limit and its field."""
    field_name = (f"thresholds.{row['name']}" if row["name"] in THRESHOLDS
                  else f"benchmark.comparisons {row['name']}")
    if row["verdict"] == "not run":
        return f"{row['name']}: not run ({row['target']} or {row['baseline']} has no successful requests)"
    return (f"{row['metric']} of {row['target']} {row['target_value'] * 1e3:.0f} ms = {row['actual_ratio']:.3f} x "
            f"{row['baseline']} {row['baseline_value'] * 1e3:.0f} ms, expected {row['operator']} {row['ratio']} "
            f"({field_name}): {row['verdict']}")


def config_sha256(target: Target) -> str:
    return hashlib.sha256(target.model_dump_json().encode()).hexdigest()


@dataclass
class RunResults:
    target: Target
    target_file: str
    started: float = field(default_factory=time.time)
    versions: dict[str, str] = field(default_factory=dict)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    correctness: dict[str, Any] | None = None
    transfer_failures: dict[str, list[str]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def add_step(self, name: str, instance: str, result: StepResult, records_file: str,
                 evidence: dict[str, Metrics]) -> None:
        self.steps[name] = {"instance": instance, "stats": result.stats(), "records": records_file,
                            "server_ttft_mean_s": server_mean_ttft(evidence.get(instance, Metrics())),
                            "evidence": evidence}

    def to_json(self) -> str:
        return json.dumps({
            "schema_version": SCHEMA_VERSION, "target": self.target.name, "target_file": self.target_file,
            "config_sha256": config_sha256(self.target), "started": self.started, "finished": time.time(),
            "versions": self.versions, "steps": self.steps, "comparisons": self.comparisons,
            "correctness": self.correctness, "transfer_failures": self.transfer_failures,
            "timings": self.timings,
        }, indent=2, sort_keys=True, default=Metrics.by_name) + "\n"

    def write(self, path: Path) -> None:
        path.write_text(self.to_json())
