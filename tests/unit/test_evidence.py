"""Where a step's KV came from, by each evidence source, on counters and log lines of the versions we support."""

from __future__ import annotations

import pytest

from harness.evidence import describe, held_tokens, local_tokens, read, served_by
from harness.metrics import Metrics, Sample
from harness.results import step_evidence

from .test_probe import RECORDINGS

# Deltas over a real cpu-local step 3 (vLLM 0.32, Mooncake 0.3.13): 40 prompts x 7 full blocks from the pool.
STEP3_032 = Metrics.of_totals({"vllm:external_prefix_cache_hits_total": 35840.0, "vllm:prefix_cache_hits_total": 0.0,
                               "vllm:prefix_cache_queries_total": 40960.0})
MASTER_0313 = Metrics.of_totals({"master_batch_get_replica_list_requests_total": 40.0,
                                 "master_batch_get_replica_list_items_total": 280.0, "mem_cache_hit_nums_": 280.0})
NONE = Metrics()
# vLLM 0.11 has no external counters: its step 3 evidence has only the local ones.
STEP3_011 = Metrics.of_totals({"vllm:prefix_cache_hits_total": 0.0, "vllm:prefix_cache_queries_total": 102400.0})
ASCEND_LOG = "\n".join(
    f"(EngineCore_DP0 pid=7) INFO 12-01 10:24:44 [mooncake_store_connector_v1.py:219] Reqid: cmpl-{i}, "
    f"Total tokens 1024, mooncake hit tokens: 896, need to load: 896" for i in range(3))


def test_cpu_local_step3_by_every_source():
    r = {s: read(s, STEP3_032, MASTER_0313, [896] * 40, "") for s in ("external_hits", "cached_tokens", "master_gets")}
    assert r["external_hits"].present and r["external_hits"].pool == 35840
    assert r["cached_tokens"].pool == 35840 and "0 of them local" in r["cached_tokens"].detail
    assert r["master_gets"].pool == 280 and r["master_gets"].unit == "keys"  # not the 40 batch requests
    assert served_by(list(r.values()), local_tokens(STEP3_032)) == "pool"


def test_vllm_0_11_has_no_external_hits_and_says_so():
    r = read("external_hits", STEP3_011, NONE, [], "")
    assert not r.present and "vLLM 0.11 has none" in r.detail
    assert "external_hits absent" in describe([r], 0)


def test_vllm_0_11_omits_cached_tokens_when_zero():
    # 0.11 leaves prompt_tokens_details out when nothing was cached: the record then holds None, which counts 0.
    assert read("cached_tokens", STEP3_011, NONE, [None, None], "").pool == 0


def test_step2_of_the_seed_is_the_instance_own_cache():
    step2 = Metrics.of_totals({"vllm:external_prefix_cache_hits_total": 0.0, "vllm:prefix_cache_hits_total": 35840.0})
    readings = [read(s, step2, NONE, [896] * 40, "") for s in ("external_hits", "cached_tokens")]
    assert [x.pool for x in readings] == [0, 0]
    assert served_by(readings, local_tokens(step2)) == "own prefix cache"


def test_master_gets_of_mooncake_0_3_7_count_absent_counters_as_zero():
    """0.3.7.post2 lists a counter only once it moved (its recorded /metrics before any client is empty)."""
    before = Metrics.parse((RECORDINGS / "mooncake-0.3.7.post2" / "metrics-before-client.txt").read_text())
    after = Metrics.parse((RECORDINGS / "mooncake-0.3.7.post2" / "metrics-after-client.txt").read_text())
    r = read("master_gets", NONE, step_evidence(before, after), [], "")
    assert r.present and r.pool == 5 - 3 and r.detail == "5 lookups, 3 failed"
    assert read("master_gets", NONE, NONE, [], "").pool == 0


def test_master_gets_of_mooncake_0_3_7_in_a_real_step_3_are_lookups():
    # Measured: cpu-local-seed-mooncake step 3, vLLM 0.32's connector against the 0.3.7.post2 master.
    r = read("master_gets", NONE, Metrics.of_totals({"master_batch_exist_key_requests_total": 80.0,
                                                    "master_batch_get_replica_list_requests_total": 40.0}), [], "")
    assert (r.pool, r.unit) == (40, "lookups")


def test_connector_log_of_vllm_ascend():
    r = read("connector_log", NONE, NONE, [], ASCEND_LOG)
    assert r.present and r.pool == 3 * 896
    quiet = read("connector_log", NONE, NONE, [], "(APIServer pid=1) INFO: 127.0.0.1 - POST /v1/completions 200")
    assert not quiet.present and "no per-request" in quiet.detail


def test_unknown_source_is_an_error():
    with pytest.raises(ValueError, match="known: external_hits"):
        read("vibes", NONE, NONE, [], "")


@pytest.mark.parametrize("version", ["0.11.0", "0.32.0"])
def test_held_tokens_of_an_idle_instance_that_released_its_blocks(version):
    metrics = Metrics.parse((RECORDINGS / f"vllm-{version}" / "metrics-after-steps.txt").read_text())
    assert held_tokens(metrics) == 0


def test_held_tokens_after_step_1_on_the_seed_connector():
    # Recorded live on cpu-local-seed (vllm-ascend 0.11.0rc2's connector, 160 blocks of 128 tokens): idle, no request
    # running or waiting, and kv_cache_usage_perc 0.1132 of the 159 usable blocks: 2 requests' 9 blocks each kept.
    metrics = Metrics.parse((RECORDINGS / "vllm-0.11.0" / "metrics-idle-after-step1.txt").read_text())
    assert metrics.get("vllm:num_requests_running", engine="0", model_name="qwen") == 0
    assert held_tokens(metrics) == 18 * 128


def test_held_tokens_unknown_without_the_gauges():
    assert held_tokens(Metrics.of_totals({"vllm:prefix_cache_hits_total": 0.0})) is None
    usage = Metrics([Sample("vllm:kv_cache_usage_perc", {"engine": "0"}, 0.5)])
    assert held_tokens(usage) is None  # no cache_config_info: no block count
