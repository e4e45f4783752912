"""The correctness probe's judgement: answers parsed from real vLLM text, like-with-like verdicts, the guards that
make a prompt inconclusive, the cold-vs-pool second opinion and the miss control."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.metrics import Metrics, Sample
from harness.probe import (
    Answer,
    ProbeError,
    closeness,
    first_difference,
    inconclusive_reason,
    judge,
    parse_answer,
    token_id,
    wait_pool_settled,
)

RECORDINGS = Path(__file__).parent / "recordings"


def answer(role, ids, cached=0, local=0, top=None, instance="instance-1"):
    top = top if top is not None else [{t: -1.0} for t in ids]
    return Answer(role=role, instance=instance, token_ids=list(ids), top=top, text=" ".join(map(str, ids)),
                  prompt_tokens=1000, cached_tokens=cached, local_tokens=local, seconds=0.1)


def test_parse_real_answer_of_vllm_0_32():
    body = json.loads((RECORDINGS / "vllm-0.32.0" / "completion-logprobs-token-ids.json").read_text())
    a = parse_answer("local_hit", "instance-1", body, local_tokens=896, seconds=0.2)
    assert len(a.token_ids) == 16 and all(isinstance(t, int) for t in a.token_ids)
    assert a.cached_tokens == 896 and a.pool_tokens == 0 and a.prompt_tokens == 1000
    assert all(a.token_ids[i] in a.top[i] for i in range(16)), "greedy: the chosen token is in its own top"
    assert len(a.top[0]) == 5


def test_absent_prompt_tokens_details_mean_nothing_cached():
    body = json.loads((RECORDINGS / "vllm-0.32.0" / "completion-logprobs-token-ids.json").read_text())
    body["usage"].pop("prompt_tokens_details")  # (0.11's null form: tests/unit/test_vllm_versions.py)
    assert parse_answer("cold", "instance-1", body, 0, 0.1).cached_tokens == 0
    with pytest.raises(ProbeError, match="lacks"):
        parse_answer("cold", "instance-1", {"choices": []}, 0, 0.1)


def test_token_id_form():
    assert token_id("token_id:2636") == 2636
    with pytest.raises(ProbeError, match="token_id:N"):
        token_id("abc")


def test_local_hits_sum_label_sets_and_ignore_created():
    m = Metrics([Sample("vllm:prefix_cache_hits_total", {"engine": "0"}, 896.0),
                 Sample("vllm:prefix_cache_hits_total", {"engine": "1"}, 128.0),
                 Sample("vllm:prefix_cache_hits_created", {}, 1.7e9),
                 Sample("vllm:prefix_cache_queries_total", {}, 5000.0)])
    assert m.total("vllm:prefix_cache_hits") == 1024.0
    assert Metrics().total("vllm:prefix_cache_hits") == 0


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 9, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2


def test_equal_hits_are_equal_and_a_wrong_token_differs():
    cold, local = answer("cold", [5, 6, 7]), answer("local_hit", [5, 6, 7], cached=896, local=896)
    pool = answer("pool_hit", [5, 6, 7], cached=896, instance="instance-2")
    assert judge(0, cold, local, pool)["verdict"] == "equal"
    wrong = answer("pool_hit", [5, 6, 8], cached=896, instance="instance-2")
    row = judge(3, cold, local, wrong)
    assert row["verdict"] == "differs" and row["position"] == 2 and row["pool_ids"] == [5, 6, 8]
    assert row["local_ids"] == [5, 6, 7] and row["pool_tokens"]["pool_hit"] == 896


@pytest.mark.parametrize("cold_cached, local_cached, pool_cached, pool_local, why", [
    (128, 896, 896, 0, "already had 128 cached tokens"),
    (0, 0, 0, 0, "had no cached tokens"),
    (0, 896, 896, 896, "took 896 tokens from its own cache"),
    (0, 896, 768, 0, "had 768 cached tokens, the local hit on instance-1 896"),
])
def test_hits_that_are_not_like_with_like_are_inconclusive(cold_cached, local_cached, pool_cached, pool_local, why):
    cold = answer("cold", [1], cached=cold_cached)
    local = answer("local_hit", [1], cached=local_cached, local=local_cached)
    pool = answer("pool_hit", [2], cached=pool_cached, local=pool_local, instance="instance-2")
    assert why in inconclusive_reason(cold, local, pool)
    row = judge(0, cold, local, pool)
    assert row["verdict"] == "inconclusive" and why in row["why"], "an inconclusive prompt is never a mismatch"


def test_cold_vs_pool_is_close_when_each_token_is_in_the_others_top():
    cold = answer("cold", [5, 6, 7], top=[{5: -1}, {6: -1, 9: -1.1}, {7: -1}])
    pool = answer("pool_hit", [5, 9, 1], top=[{5: -1}, {9: -1, 6: -1.05}, {1: -1}])
    assert closeness(cold, pool) == {"verdict": "close", "position": 1, "cold_token": 6, "pool_token": 9,
                                     "pool_token_in_cold_top": True, "cold_token_in_pool_top": True}
    far = answer("pool_hit", [5, 9, 1], top=[{5: -1}, {9: -1, 4: -2}, {1: -1}])
    assert closeness(cold, far)["verdict"] == "far" and closeness(cold, far)["cold_token_in_pool_top"] is False
    assert closeness(cold, answer("pool_hit", [5, 6, 7]))["verdict"] == "equal"
    assert closeness(cold, answer("pool_hit", [5, 6]))["verdict"] == "far"


def master_reading(keys: float, started: float, ended: float) -> Metrics:
    return Metrics.of_totals({"master_key_count": keys, "master_batch_put_start_items_total": started,
                              "master_batch_put_end_items_total": ended})


def test_pool_settles_once_every_put_ended_and_nothing_moved_for_quiet_s():
    readings = iter([master_reading(7, 7, 5), master_reading(14, 14, 14)])
    last = master_reading(14, 14, 14)
    waited = wait_pool_settled(lambda: next(readings, last), quiet_s=0.05, timeout_s=10, stuck_s=5)
    assert 0.05 <= waited < 5  # balanced: not the stuck wait


def test_pool_with_a_put_that_never_ends_settles_after_stuck_s_not_the_timeout():
    # A killed instance's put stays started and never ends: the master's counters stop there.
    waited = wait_pool_settled(lambda: master_reading(56, 57, 56), quiet_s=0.01, timeout_s=30, stuck_s=0.2)
    assert 0.2 <= waited < 30
