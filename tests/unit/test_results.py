"""Judging a run: comparisons, transfer-failure lines, evidence deltas (the results file: test_results_file.py)."""

from __future__ import annotations

from harness.bench import RequestRecord, StepResult
from harness.config import Comparison
from harness.failure_lines import TRANSFER_FAILURES, transfer_failures
from harness.metrics import Metrics, Sample
from harness.results import describe, evaluate, server_mean_ttft, step_evidence


def step(name, ttfts, texts=None):
    texts = texts or ["x"] * len(ttfts)
    return StepResult(name=name, records=[
        RequestRecord(index=i, send_time=0.0, ttft_s=t, latency_s=(t or 0) + 0.1, output_text=texts[i], output_tokens=1,
                      status="ok" if t is not None else "timeout") for i, t in enumerate(ttfts)])


def test_comparison_pass_fail_and_not_run():
    steps = {"cold": step("cold", [1.0, 3.0]), "cross_instance_hit": step("x", [0.2, 0.6])}
    c = Comparison(name="cross_instance_ttft_fraction", target="cross_instance_hit", ratio=0.45)
    row = evaluate(c, steps)
    assert row.verdict == "pass" and abs(row.actual_ratio - 0.2) < 1e-9
    assert "thresholds.cross_instance_ttft_fraction" in describe(row) and "0.200" in describe(row)
    strict = evaluate(c.model_copy(update={"ratio": 0.1}), steps)
    assert strict.verdict == "fail" and "expected < 0.1" in describe(strict)
    assert evaluate(c.model_copy(update={"target": "local_hit"}), steps).verdict == "not run"
    p90 = evaluate(Comparison(name="p90", metric="p90_ttft", target="cross_instance_hit", ratio=0.5,
                              operator=">="), steps)
    assert p90.verdict == "fail" and "benchmark.comparisons p90" in describe(p90)


def test_only_failed_steps_is_not_run():
    steps = {"cold": step("cold", [None]), "local_hit": step("l", [0.1])}
    assert evaluate(Comparison(name="c", target="local_hit", ratio=0.4), steps).verdict == "not run"


def test_transfer_failure_lines_from_real_log_messages():
    log = "\n".join([
        "(Worker pid=1) INFO worker.py:1443] Mooncake mode=embedded (global_segment_size=1073741824)",
        "(Worker pid=1) WARNING worker.py:1287] Failed to get 3 Mooncake keys from sub-batch (batch_keys=7)",
        "(Worker pid=1) WARNING worker.py:956] batch_put failed: 2/7 keys failed (codes=[-800])",
        "(Worker pid=1) ERROR worker.py:2170] Remote connection failed in lookup: timeout",
        "INFO: 127.0.0.1 - \"POST /v1/completions HTTP/1.1\" 200 OK",
    ])
    lines = transfer_failures(log, TRANSFER_FAILURES)
    assert len(lines) == 3 and "sub-batch" in lines[0] and "batch_put" in lines[1]
    assert transfer_failures("all good\nMooncake store ready", TRANSFER_FAILURES) == []


def test_step_evidence_and_server_ttft():
    before = Metrics([Sample("vllm:external_prefix_cache_hits_total", {"model_name": "qwen"}, 10.0),
                      Sample("master_key_count", {}, 5.0), Sample("vllm:prompt_tokens_created", {}, 1.0)])
    after = Metrics([Sample("vllm:external_prefix_cache_hits_total", {"model_name": "qwen"}, 906.0),
                     Sample("master_key_count", {}, 5.0), Sample("vllm:time_to_first_token_seconds_sum", {}, 4.0),
                     Sample("vllm:time_to_first_token_seconds_count", {}, 8.0),
                     Sample("vllm:prompt_tokens_created", {}, 1700000000.0)])
    assert step_evidence(before, after).by_name() == {"vllm:external_prefix_cache_hits_total": 896.0,
                                                      "vllm:time_to_first_token_seconds_sum": 4.0,
                                                      "vllm:time_to_first_token_seconds_count": 8.0}
    kept = step_evidence(before, after, ("vllm:external_prefix_cache_hits",))
    assert kept.by_name() == {"vllm:external_prefix_cache_hits_total": 896.0}
    assert server_mean_ttft(after) == 0.5 and server_mean_ttft(Metrics()) is None
