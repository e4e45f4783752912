"""harness/pool_cost.py: the pool-off target, the refusal of runs that did not do the same work, and the gate; the
pool-cost section of the target; Deployment.relaunch (the second bring-up) with stand-ins for the instances.

The requests are built from a real run's numbers: tests/unit/recordings/results/cpu-local.json (a green cpu-local run,
recordings/README.md), whose 40-prompt steps of 1024 tokens in 128-token blocks report per prompt 0 cached tokens cold
and 896 (7 full blocks) on the repeat, and whose step 2, after dataset B, was served by the pool: instance-1's
vllm:prefix_cache_hits 0 and external hits 35840 over the step. Its TTFT medians (cold 7.435 s, repeat 1.258 s) are the
pool-off side of the gate's cases."""

from __future__ import annotations

import dataclasses
import json

import pytest
from pydantic import ValidationError

from harness.bench import RequestRecord, StepResult
from harness.config import CONFIGS, ROOT, PoolCost, load_target
from harness.deployment import Deployment, Policy
from harness.names import COLD, LOCAL_HIT
from harness.pool_cost import POOL_OFF, POOL_ON, NotComparable, Run, check_comparable, judge, pool_off
from harness.results_file import config_sha256

RECORDED = json.loads((ROOT / "tests/unit/recordings/results/cpu-local.json").read_text())["steps"]
N = RECORDED[LOCAL_HIT]["stats"]["count"]  # 40
PER_PROMPT = 896  # 35840 external hits / 40 prompts: 7 full 128-token blocks of a 1024-token prompt
COLD_MEDIAN, HIT_MEDIAN = RECORDED[COLD]["stats"]["median"], RECORDED[LOCAL_HIT]["stats"]["median"]


def records(ttft: float, cached: list[int | None], failed: int = 0) -> StepResult:
    out = [RequestRecord(index=i, send_time=0.0, ttft_s=ttft, latency_s=ttft + 0.5, output_text="x" * 10,
                         output_tokens=10, status="ok", cached_tokens=c) for i, c in enumerate(cached)]
    for i in range(failed):
        out[i] = RequestRecord(index=i, send_time=0.0, ttft_s=None, latency_s=1.0, output_text="", output_tokens=0,
                               status="http_500", error="KV load failed")
    return StepResult(name="", records=out)


def run(label: str, cold_s: float = COLD_MEDIAN, hit_s: float = HIT_MEDIAN, *, cold=None, hit=None,
        own: float | None = None, failed: int = 0, instance: str = "instance-1") -> Run:
    """A run whose repeat was served by the instance's own prefix cache, unless told otherwise."""
    hit = [PER_PROMPT] * N if hit is None else hit
    return Run(label, instance, {COLD: records(cold_s, [0] * N if cold is None else cold, failed),
                                 LOCAL_HIT: records(hit_s, hit)},
               {COLD: 0.0, LOCAL_HIT: float(sum(c or 0 for c in hit)) if own is None else own})


def refused(on: Run, off: Run, step: str = LOCAL_HIT) -> str:
    with pytest.raises(NotComparable) as e:
        check_comparable(on, off, step)
    return str(e.value)


# -- the pool-off target ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_pool_off_removes_only_the_kv_transfer_config(name):
    t = load_target(name)
    off = pool_off(t)
    assert all(x.kv_transfer_config is None for x in off.instances)
    assert [x.model_dump(exclude={"kv_transfer_config"}) for x in off.instances] == \
           [x.model_dump(exclude={"kv_transfer_config"}) for x in t.instances]
    assert off.model_dump(exclude={"instances"}) == t.model_dump(exclude={"instances"})
    assert any(x.kv_transfer_config is not None for x in t.instances)  # every shipped target uses the pool


def test_a_target_without_the_pool_has_nothing_to_compare():
    off = pool_off(load_target("cpu-local"))
    with pytest.raises(NotComparable, match="runs without the pool already"):
        pool_off(off)


# -- comparable or refused ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("step", [COLD, LOCAL_HIT])
def test_two_runs_that_did_the_same_work_compare(step):
    check_comparable(run(POOL_ON), run(POOL_OFF), step)


def test_a_repeat_the_pool_served_is_not_a_local_hit():
    # The recorded step 2 after dataset B: 35840 tokens cached, none by instance-1's own prefix cache.
    evidence = RECORDED[LOCAL_HIT]["evidence"]["instance-1"]
    own = evidence["vllm:prefix_cache_hits_total"]
    assert (own, evidence["vllm:external_prefix_cache_hits_total"]) == (0.0, PER_PROMPT * N)
    said = refused(run(POOL_ON, own=own), run(POOL_OFF))
    assert said.startswith("pool on on instance-1: the instance's own prefix cache served 0 of the repeat's 35840")
    assert "not a local hit" in said and "pool_cost.num_prompts" in said


def test_a_repeat_without_a_prefix_cache_is_not_a_hit_but_its_cold_step_compares():
    # atlas-800t-a2-kvpool turns the prefix cache off: pool off, the repeat is a miss (the pool on: a pool hit).
    on, off = run(POOL_ON, own=0.0), run(POOL_OFF, hit=[0] * N)
    said = refused(on, off)
    assert f"pool off on instance-1: {N} of {N} repeated requests found no cached tokens" in said
    assert "--enable-prefix-caching" in said and "pool on on instance-1" in said
    check_comparable(on, off, COLD)


def test_a_cold_step_with_cached_tokens_is_not_cold():
    on, off = run(POOL_ON, cold=[0] * 5 + [PER_PROMPT] + [0] * (N - 6)), run(POOL_OFF)
    check_comparable(on, off, LOCAL_HIT)  # the repeat is still a local hit in both
    said = refused(on, off, COLD)
    assert said == (f"pool on on instance-1: 1 of {N} requests of the cold step found cached tokens (first: request 5, "
                    f"{PER_PROMPT}): it was not cold")


def test_failed_requests_are_refused_with_the_first_failure():
    said = refused(run(POOL_ON), run(POOL_OFF, failed=2), COLD)
    assert said == f"pool off on instance-1: 2 of {N} requests of the cold step failed, first: http_500 KV load failed"


def test_hits_of_other_lengths_did_not_save_the_same_prefill():
    said = refused(run(POOL_ON), run(POOL_OFF, hit=[PER_PROMPT] * (N - 1) + [PER_PROMPT - 128]))
    assert said.startswith(f"1 of {N} repeated requests hit other lengths with and without the pool (first: request "
                           f"{N - 1}, {PER_PROMPT} cached tokens with it, {PER_PROMPT - 128} without)")


def test_no_cached_tokens_reported_cannot_prove_anything():
    for step in (COLD, LOCAL_HIT):
        said = refused(run(POOL_ON, cold=[None] * N, hit=[None] * N, own=PER_PROMPT * N), run(POOL_OFF), step)
        assert "--enable-prompt-tokens-details" in said


def test_vllm_0_11_leaves_out_a_cold_zero():
    # vLLM 0.11 omits cached_tokens when it is 0 (harness/evidence.py): a cold None is 0 once the repeat has it.
    check_comparable(run(POOL_ON, cold=[None] * N), run(POOL_OFF, cold=[None] * N), COLD)


def test_two_instances_are_not_one():
    assert "the pool-on run measured instance-1, the pool-off run instance-2" in refused(
        run(POOL_ON), run(POOL_OFF, instance="instance-2"))


# -- the gate -----------------------------------------------------------------------------------------------------

def test_a_pool_within_the_bound_is_green_and_says_its_numbers():
    on, off = run(POOL_ON, COLD_MEDIAN * 1.10, HIT_MEDIAN * 1.25), run(POOL_OFF)
    v = {s: judge(on, off, s, 0.25) for s in (COLD, LOCAL_HIT)}
    assert v[COLD].ok and v[LOCAL_HIT].ok  # 25% exactly is within "no more than 25%"
    assert v[COLD].message == ("pool_cost.max_slowdown: step 1 cold on instance-1: median TTFT 8.178 s with the pool, "
                               "7.435 s without it: +10.0%, within the bound +25.0% (the pool on run came first)")


def test_a_slower_pool_is_red_naming_the_step_both_medians_the_slowdown_and_the_bound():
    on, off = run(POOL_ON, COLD_MEDIAN, HIT_MEDIAN * 1.5), run(POOL_OFF)
    v = {s: judge(on, off, s, 0.25) for s in (COLD, LOCAL_HIT)}
    assert v[COLD].ok and not v[LOCAL_HIT].ok
    assert v[LOCAL_HIT].message == ("pool_cost.max_slowdown: step 2 local hit on instance-1: median TTFT 1.888 s with "
                                    "the pool, 1.258 s without it: +50.0%, more than the bound +25.0% (the pool on run "
                                    "came first)")


def test_the_control_bound_no_real_pool_meets_is_red():
    # The self-test's control: max_slowdown -0.5, "the pool makes a miss twice as fast"; equal medians miss it.
    v = {s: judge(run(POOL_ON), run(POOL_OFF), s, -0.5) for s in (COLD, LOCAL_HIT)}
    assert not v[COLD].ok and not v[LOCAL_HIT].ok and "more than the bound -50.0%" in v[COLD].message


def test_the_median_not_the_mean_is_judged():
    on = run(POOL_ON)
    on.steps[COLD].records[0] = dataclasses.replace(on.steps[COLD].records[0], ttft_s=100.0)
    assert judge(on, run(POOL_OFF), COLD, 0.25).ok  # one slow first request moves the mean, not the median


# -- the target's section, the config hash, the second bring-up ----------------------------------------------------

def test_the_section_defaults_and_bounds():
    t = load_target("cpu-local")
    assert t.pool_cost.prompts_per_round(t.benchmark) == t.benchmark.concurrency == 10
    assert PoolCost(num_prompts=4).prompts_per_round(t.benchmark) == 4
    with pytest.raises(ValidationError):
        PoolCost(max_slowdown=-1)  # the pool cannot make a step take no time
    with pytest.raises(ValidationError):
        PoolCost(rounds=0)


def test_tuning_the_pool_cost_keeps_the_config_hash():
    t = load_target("cpu-local")
    assert config_sha256(t.model_copy(update={"pool_cost": PoolCost(max_slowdown=0.1, rounds=9)})) == config_sha256(t)


class Proc:
    def __init__(self, name):
        self.name, self.pid = name, 7


def test_relaunch_replaces_the_instances_that_close_stops(monkeypatch, tmp_path):
    from harness import mooncake, serving
    from harness.owner import Owner

    calls = []
    t = load_target("cpu-local")
    monkeypatch.setattr(mooncake, "require_alive", lambda master: None)
    monkeypatch.setattr(serving, "start_instances", lambda containers, target: [
        serving.RunningInstance(x, Proc(x.name), 0.0) for x in target.instances])
    monkeypatch.setattr(serving, "start_instance", lambda container, target, spec, log_name: serving.RunningInstance(
        spec, Proc(log_name), 1.0))
    monkeypatch.setattr(serving, "stop_all", lambda xs: calls.append("stop " + ", ".join(i.process.name for i in xs)))
    owner = Owner("run-1", "2026-01-01T00:00:00+00:00", "someone", "a-host", 42, False)
    with Deployment(t, owner, {}, tmp_path, Policy(attach=True)) as d:  # attach: close() stops the instances
        d.containers = {"node1": "its container"}
        first = d.launch()
        d.relaunch(pool_off(t), "pool-off")
        assert calls == ["stop instance-1, instance-2"]
        assert d.instances is first and [i.process.name for i in first] == ["instance-1-pool-off",
                                                                             "instance-2-pool-off"]
        assert all(i.spec.kv_transfer_config is None for i in d.instances)
        calls.clear()
    assert calls == ["stop instance-1-pool-off, instance-2-pool-off"]
