"""Stage 5, the KV pool: the seed's three steps with dataset A.

Step 1 sends dataset A to instance 1 cold (nothing is sent before it), step 2 sends it to instance 1
again (local hit), step 3 sends it to instance 2 (cross-instance hit: its KV must come from the pool).
Mean TTFTs are compared with the cold one against the target's thresholds, and step 3 must show that
the hit came from the pool: instance 2's external (connector) prefix-cache hits must move.
"""

import pytest

from harness import bench, mooncake, serving

pytestmark = [pytest.mark.acceptance, pytest.mark.kv_pool]

EXTERNAL_HITS = "vllm:external_prefix_cache_hits_total"
LOCAL_HITS = "vllm:prefix_cache_hits_total"


@pytest.fixture(scope="module")
def steps() -> dict[str, bench.StepResult]:
    return {}


@pytest.fixture(scope="module")
def dataset_a(instances, target, phases) -> list[str]:
    """Dataset A: seeded random characters, each exactly input_len tokens by the served tokenizer.
    Only /tokenize is called, which computes no KV."""
    b = target.benchmark
    with phases.phase("dataset A (tokenizer calibration)"):
        tokenize = bench.tokenize_via(instances[0].url, target.model.served_name)
        return bench.make_dataset(tokenize, num_prompts=b.num_prompts, input_len=b.input_len, seed=b.seed)


def run(name: str, instance, prompts, target, phases, run_dir) -> bench.StepResult:
    b = target.benchmark
    with phases.phase(name):
        result = bench.run_step(instance.url, target.model.served_name, prompts, output_len=b.output_len,
                                concurrency=b.concurrency, timeout_s=b.request_timeout_s, name=name)
    (run_dir / f"{name.replace(' ', '_')}.jsonl").write_text(result.to_json_lines())
    s = result.stats()
    print(f"{name} on {instance.name}: mean TTFT {s['mean']}, median {s['median']}, p90 {s['p90']}, "
          f"{s['ok']} ok / {s['failed']} failed")
    assert not result.failures, (
        f"{name} on {instance.name}: {len(result.failures)} of {len(prompts)} requests failed, first: "
        f"{result.failures[0].status} {result.failures[0].error}")
    return result


def need(steps, key: str, step: str) -> bench.StepResult:
    if key not in steps:
        pytest.skip(f"{step} did not complete, so there is no cold TTFT to compare with")
    return steps[key]


def describe(result: bench.StepResult, cold: bench.StepResult) -> str:
    return (f"mean TTFT {result.stats()['mean'] * 1e3:.0f} ms = {bench.ratio(result, cold):.2f} x cold "
            f"{cold.stats()['mean'] * 1e3:.0f} ms")


def test_step1_cold_on_instance_1(instances, dataset_a, steps, target, phases, run_dir):
    steps["cold"] = run("step 1 cold", instances[0], dataset_a, target, phases, run_dir)


def test_step2_local_hit_on_instance_1(instances, dataset_a, steps, target, phases, run_dir):
    cold = need(steps, "cold", "step 1 (cold)")
    hit = steps["local_hit"] = run("step 2 local hit", instances[0], dataset_a, target, phases, run_dir)
    limit = target.thresholds.local_hit_ttft_fraction
    assert bench.ratio(hit, cold) < limit, (
        f"step 2 (local hit on {instances[0].name}): {describe(hit, cold)}, expected < {limit} "
        "(thresholds.local_hit_ttft_fraction): the instance's prefix cache did not speed up the repeat")


def test_step3_cross_instance_hit_on_instance_2(instances, dataset_a, steps, target, phases, run_dir):
    cold = need(steps, "cold", "step 1 (cold)")
    peer = instances[1]
    before, master_before = serving.metrics(peer), mooncake.master_metrics(target)
    hit = steps["cross_instance_hit"] = run("step 3 cross-instance hit", peer, dataset_a, target, phases, run_dir)
    after, master_after = serving.metrics(peer), mooncake.master_metrics(target)
    external = serving.metric_sum(after, EXTERNAL_HITS) - serving.metric_sum(before, EXTERNAL_HITS)
    local = serving.metric_sum(after, LOCAL_HITS) - serving.metric_sum(before, LOCAL_HITS)
    moved = {k: master_after[k] - master_before.get(k, 0) for k in master_after
             if "get" in k and master_after[k] != master_before.get(k, 0)}
    evidence = (f"{peer.name} external (pool) prefix-cache hits +{external:.0f} tokens, local hits +{local:.0f}; "
                f"master counters moved: {moved or 'none'}")
    print(f"step 3 evidence: {evidence}")
    limit = target.thresholds.cross_instance_ttft_fraction
    ratio = bench.ratio(hit, cold)
    assert external > 0, (f"step 3 (cross-instance hit on {peer.name}): no KV came from the pool ({evidence}); "
                          f"{describe(hit, cold)}. Check the connector in {peer.name}'s log and the master.")
    assert ratio < limit, (f"step 3 (cross-instance hit on {peer.name}): {describe(hit, cold)}, expected < {limit} "
                           f"(thresholds.cross_instance_ttft_fraction); {evidence}")
