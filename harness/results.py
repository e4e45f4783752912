"""Judging a benchmark run: each step's metric evidence, the server's own mean TTFT, and the comparisons of
mean (or percentile) TTFTs between steps. The run's results file that keeps them: harness/results_file.py.
"""

from __future__ import annotations

import operator
from typing import Literal

from pydantic import Field

from harness.bench import StepResult
from harness.config import Comparison
from harness.metrics import Metrics
from harness.names import THRESHOLDS

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


class ComparisonRow(Comparison):
    """A comparison (benchmark.comparisons or a threshold) and how the run judged it (results.json: `comparisons`)."""

    baseline_value: float | None = Field(description="the baseline step's metric, seconds (null: not run)")
    target_value: float | None = Field(description="the target step's metric, seconds (null: not run)")
    actual_ratio: float | None = Field(description="target_value / baseline_value (null: not run)")
    verdict: Literal["pass", "fail", "not run"] = Field(
        description="not run: a step of the two did not run or had no successful request")


def evaluate(c: Comparison, steps: dict[str, StepResult]) -> ComparisonRow:
    def row(verdict: str, base: float | None = None, got: float | None = None,
            actual: float | None = None) -> ComparisonRow:
        return ComparisonRow(**c.model_dump(), baseline_value=base, target_value=got, actual_ratio=actual,
                             verdict=verdict)

    if c.baseline not in steps or c.target not in steps:
        return row("not run")
    stat = METRIC_STAT[c.metric]
    base, got = steps[c.baseline].stats()[stat], steps[c.target].stats()[stat]
    if not base or got is None:
        return row("not run", base, got)
    actual = got / base
    return row("pass" if OPERATORS[c.operator](actual, c.ratio) else "fail", base, got, actual)


def describe(row: ComparisonRow) -> str:
    """One line a person reads: what was compared, the numbers, the limit and its field."""
    field_name = (f"thresholds.{row.name}" if row.name in THRESHOLDS else f"benchmark.comparisons {row.name}")
    if row.verdict == "not run":
        return f"{row.name}: not run ({row.target} or {row.baseline} has no successful requests)"
    return (f"{row.metric} of {row.target} {row.target_value * 1e3:.0f} ms = {row.actual_ratio:.3f} x "
            f"{row.baseline} {row.baseline_value * 1e3:.0f} ms, expected {row.operator} {row.ratio} "
            f"({field_name}): {row.verdict}")
