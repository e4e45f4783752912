"""Traps of the correctness probe's settings, and of flags that change an instance's KV but no pool key."""

from __future__ import annotations

import pytest

from harness.config import load_target

from .test_config import fields, problems, raw, write


@pytest.mark.parametrize("name", ["cpu-local", "atlas-800t-a2"])
def test_shipped_targets_probe_like_with_like(name):
    c = load_target(name).benchmark.correctness
    assert c.mode == "probe" and c.input_len % 128 != 0 and 8 <= c.num_prompts <= 16 and 16 <= c.output_len <= 32


def test_probe_seed_must_not_be_a_dataset_seed(tmp_path):
    d = raw("cpu-local")
    d["benchmark"]["correctness"]["seed"] = d["benchmark"]["seed"]
    assert fields(tmp_path, d) == ["benchmark.correctness.seed"]
    d["benchmark"]["eviction"] = {"seed": 77}
    d["benchmark"]["correctness"]["seed"] = 77
    assert "eviction" in problems(tmp_path, d)[0][1]


def test_probe_needs_cached_token_counts(tmp_path):
    d = raw("cpu-local")
    d["instances"][1]["args"] = [a for a in d["instances"][1]["args"] if a != "--enable-prompt-tokens-details"]
    found = problems(tmp_path, d)
    assert [f for f, _ in found] == ["instances[1].args"] and "--enable-prompt-tokens-details" in found[0][1]
    d["benchmark"]["correctness"]["mode"] = "off"
    assert "cached_tokens evidence source" in problems(tmp_path, d)[0][1]
    d["benchmark"]["evidence"] = ["external_hits", "master_gets"]
    assert load_target_ok(tmp_path, d)


def test_probe_prompt_must_hold_a_block_and_fit_the_context(tmp_path):
    d = raw("cpu-local")
    d["benchmark"]["correctness"]["input_len"] = 100
    assert fields(tmp_path, d) == ["benchmark.correctness.input_len"]
    d["benchmark"]["correctness"].update(input_len=4090, output_len=16)
    assert "--max-model-len 4096" in problems(tmp_path, d)[0][1]


@pytest.mark.parametrize("flag, value", [("--hf-overrides", '{"rope_theta": 10000.0}'), ("--kv-cache-dtype", "fp8"),
                                         ("--quantization", "fp8")])
def test_kv_shaping_flags_must_match_across_the_pool(tmp_path, flag, value):
    d = raw("cpu-local")
    d["instances"][1]["args"] = d["instances"][1]["args"] + [flag, value]
    found = problems(tmp_path, d)
    assert [f for f, _ in found] == [f"instances[1].args {flag}"]
    assert "pool keys do not include it" in found[0][1]
    d["instances"][1]["kv_transfer_config"] = None  # not in the pool: its KV is its own business
    assert load_target_ok(tmp_path, d)


def test_dtype_spelled_differently_is_caught(tmp_path):
    d = raw("cpu-local")
    args = list(d["instances"][1]["args"])
    args[args.index("--dtype") + 1] = "float16"
    d["instances"][1]["args"] = args
    assert fields(tmp_path, d) == ["instances[1].args --dtype"]


def load_target_ok(tmp_path, d) -> bool:
    return load_target(write(tmp_path, d)) is not None


def test_step3_without_any_evidence_source_is_refused(tmp_path):
    d = raw("cpu-local")
    d["benchmark"]["evidence"] = []
    found = problems(tmp_path, d)
    assert [f for f, _ in found] == ["benchmark.evidence"] and "TTFT alone" in found[0][1]
    d["benchmark"]["evidence"] = ["cached_tokens", "cached_tokens"]
    assert "twice" in problems(tmp_path, d)[0][1]
    d["benchmark"]["evidence"] = ["pool_vibes"]
    assert fields(tmp_path, d) == ["benchmark.evidence[0]"]


def test_connector_log_of_vllms_own_connector_needs_debug_logging(tmp_path):
    d = raw("cpu-local")
    d["benchmark"]["evidence"] = ["connector_log"]
    found = problems(tmp_path, d)
    assert {f for f, _ in found} == {"benchmark.evidence"} and "at DEBUG only" in found[0][1]
    for x in d["instances"]:
        x["env"]["VLLM_LOGGING_LEVEL"] = "DEBUG"
    assert load_target_ok(tmp_path, d)
