"""What the two vLLM releases the suite meets say, as recorded from live cpu-local runs (tests/unit/recordings/):
vllm-0.11.0/ (the seed's vLLM, with vllm-ascend 0.11.0's MooncakeConnectorStoreV1 over Mooncake 0.3.7.post2: the
cpu-local-seed target) and vllm-0.32.0/ (cpu-local). The evidence sources, the probe's parser and the connector-log
parser are read against them, so a release that renames a metric or a line fails here first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import connector_log, evidence
from harness.failure_lines import TRANSFER_FAILURES, transfer_failures
from harness.metrics import Metrics
from harness.probe import parse_answer
from harness.results import INSTANCE_EVIDENCE, step_evidence

RECORDINGS = Path(__file__).parent / "recordings"
V011, V032 = RECORDINGS / "vllm-0.11.0", RECORDINGS / "vllm-0.32.0"


def metrics(folder: Path) -> Metrics:
    return Metrics.parse((folder / "metrics-after-steps.txt").read_text())


@pytest.mark.parametrize("folder", [V011, V032], ids=["0.11.0", "0.32.0"])
def test_both_releases_export_the_local_cache_and_ttft_metrics_the_suite_reads(folder):
    kept = step_evidence(Metrics(), metrics(folder), INSTANCE_EVIDENCE)
    for name in ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits", "vllm:prompt_tokens",
                 "vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count"):
        assert kept.has(name), f"{folder.name} has no {name}"


def test_external_hit_counters_exist_in_0_32_only():
    new = evidence.read("external_hits", step_evidence(Metrics(), metrics(V032), INSTANCE_EVIDENCE), Metrics(), [], "")
    assert new.present and new.pool == 43008  # instance 2 after step 3 and the probe: 48 pool hits of 896
    old = evidence.read("external_hits", step_evidence(Metrics(), metrics(V011), INSTANCE_EVIDENCE), Metrics(), [], "")
    assert not old.present and "vLLM 0.11 has none" in old.detail


def test_0_11_sends_null_prompt_token_details_when_nothing_was_cached():
    cold = json.loads((V011 / "completion-logprobs-token-ids-cold.json").read_text())
    assert cold["usage"]["prompt_tokens_details"] is None
    assert parse_answer("cold", "instance-1", cold, 0, 0.1).cached_tokens == 0


def test_0_11_hits_parse_with_their_cached_tokens_and_the_same_greedy_tokens():
    answers = {role: parse_answer(role, "i", json.loads((V011 / f"completion-logprobs-token-ids-{role}.json")
                                                         .read_text()), 0, 0.1)
               for role in ("cold", "local-hit", "pool-hit")}
    # 2141 prompt tokens: 16 full blocks of 128 (2048) cached, locally on instance 1, from the pool on instance 2
    assert answers["local-hit"].cached_tokens == answers["pool-hit"].cached_tokens == 2048
    assert answers["local-hit"].token_ids == answers["pool-hit"].token_ids
    assert len(answers["cold"].token_ids) == 16 and len(answers["cold"].top[0]) == 5


def test_vllm_ascend_0_11_hit_lines_parse_for_cold_local_and_pool_requests():
    lines = connector_log.hits((V011 / "instance-1.log").read_text() + (V011 / "instance-2.log").read_text())
    # cold on instance 1; step 2 on instance 1 (its own cache held 896 of 1024 tokens, so vllm-ascend's lookup of
    # 1023 leaves 127 to load from the pool); step 3 on instance 2; the probe's fresh miss-control prompt there
    assert [(h["total"], h["hit"], h["need_to_load"]) for h in lines] == [
        (1024, 0, 0), (1024, 1023, 127), (1024, 1023, 1023), (1000, 0, 0)]
    assert all(h["request"].startswith("cmpl-") and h["request"].endswith("-0") for h in lines)


@pytest.mark.parametrize("folder", [V011, V032], ids=["0.11.0", "0.32.0"])
def test_a_healthy_run_logs_no_transfer_failure(folder):
    text = "".join(p.read_text() for p in sorted(folder.glob("instance-*.log")))
    assert text and transfer_failures(text, TRANSFER_FAILURES) == []


def test_a_run_whose_peer_was_killed_logs_its_transfer_failures():
    # vLLM 0.32 + Mooncake 0.3.13, recorded live: instance 2's gets of keys on killed instance 1's segment.
    text = (V032 / "after-peer-killed-instance-2.log").read_text()
    lines = transfer_failures(text, TRANSFER_FAILURES)
    for line in ("Transfer failed for key", "Failed to get 4 Mooncake keys",
                 "due to KV load failure (failure_policy=fail"):
        assert any(line in x for x in lines), line


@pytest.mark.parametrize(("recording", "unit", "gets"), [
    ("mooncake-0.3.7.post2/metrics-after-vllm-0.11-steps.txt", "lookups", 86),  # counts batch requests only
    ("mooncake-0.3.13.post1/metrics-after-vllm-0.32-steps.txt", "keys", 336),  # counts the keys of each batch
])
def test_master_gets_read_in_each_mooncakes_own_unit(recording, unit, gets):
    after = Metrics.parse((RECORDINGS / recording).read_text())
    reading = evidence.read("master_gets", Metrics(), step_evidence(Metrics(), after), [], "")
    assert (reading.unit, reading.pool) == (unit, gets)
