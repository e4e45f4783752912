"""Stage 5, the KV pool: the seed's three steps with dataset A.

Step 1 sends dataset A to instance 1 cold (nothing is sent before it); optionally dataset B then evicts
it from instance 1 (benchmark.eviction, the seed's successor guide); step 2 sends dataset A to instance 1
again (local hit); step 3 sends it to instance 2 (cross-instance hit: its KV must come from the pool).
Every step records the pool's and the instances' counters before and after it. Judged: mean TTFTs
against the thresholds and declared comparisons, evidence that step 3's hit came from the pool, the
pool-served output against the cold one, and the logs for failed transfers.
"""

import allure
import pytest

from harness import bench, mooncake, report, results, serving

pytestmark = [pytest.mark.acceptance, pytest.mark.kv_pool, allure.parent_suite("acceptance"),
              allure.suite("5 kv pool"), allure.feature("5 kv pool")]


@pytest.fixture(scope="module")
def steps() -> dict[str, bench.StepResult]:
    return {}


def dataset(instances, target, seed: int, num_prompts: int, phases, label: str) -> list[str]:
    """Seeded random characters, each prompt exactly input_len tokens by the served tokenizer.
    Only /tokenize is called, which computes no KV."""
    with phases.phase(f"{label} (tokenizer calibration)"):
        tokenize = bench.tokenize_via(instances[0].url, target.model.served_name)
        return bench.make_dataset(tokenize, num_prompts=num_prompts, input_len=target.benchmark.input_len,
                                  seed=seed)


@pytest.fixture(scope="module")
def dataset_a(instances, target, phases) -> list[str]:
    b = target.benchmark
    return dataset(instances, target, b.seed, b.num_prompts, phases, "dataset A")


def snapshot(instances, target) -> dict[str, dict[str, float]]:
    return {i.name: serving.metrics(i) for i in instances} | {"master": mooncake.master_metrics(target)}


def measure(step: str, label: str, instance, instances, prompts, target, phases, run_dir, run_results,
            steps) -> bench.StepResult:
    """Run one step and record it with its evidence; a step with failed requests fails its test."""
    b = target.benchmark
    before = snapshot(instances, target)
    with phases.phase(label):
        result = bench.run_step(instance.url, target.model.served_name, prompts, output_len=b.output_len,
                                concurrency=b.concurrency, timeout_s=b.request_timeout_s, name=step)
    after = snapshot(instances, target)
    evidence = {name: results.delta(before[name], after[name],
                                    None if name == "master" else results.INSTANCE_EVIDENCE) for name in after}
    records = f"{step}.jsonl"
    (run_dir / records).write_text(result.to_json_lines())
    run_results.add_step(step, instance.name, result, records, evidence)
    steps[step] = result
    s = result.stats()
    print(f"{label} on {instance.name}: mean TTFT {s['mean']:.3f} s, median {s['median']:.3f} s, "
          f"{s['ok']} ok / {s['failed']} failed")
    assert not result.failures, (
        f"{label} on {instance.name}: {len(result.failures)} of {len(prompts)} requests failed, first: "
        f"{result.failures[0].status} {result.failures[0].error}")
    return result


def need_cold(steps) -> bench.StepResult:
    if "cold" not in steps:
        pytest.skip("step 1 (cold) did not complete, so there is no cold TTFT to compare with")
    return steps["cold"]


def attach_ttft(target, steps, run_dir) -> None:
    """The TTFT table and per-step distribution chart, with each threshold drawn over its step."""
    stats = {name: s.stats() for name, s in steps.items()}
    cold = stats["cold"]["mean"]
    limits = {c.target: c.ratio * cold for c in target.comparisons()
              if c.baseline == "cold" and c.metric == "mean_ttft" and c.operator.startswith("<") and cold}
    png = report.ttft_chart_png({n: s.ttfts() for n, s in steps.items()}, f"{target.name}: TTFT per step", limits,
                                cold_step="cold")
    (run_dir / "ttft.png").write_bytes(png)
    allure.attach(png, "TTFT per step", allure.attachment_type.PNG)
    allure.attach(report.ttft_table(stats, "cold"), "TTFT table", allure.attachment_type.TEXT)
    allure.attach(report.ttft_table_html(stats, "cold"), "TTFT table (HTML)", allure.attachment_type.HTML)


def check(name: str, target, steps, run_results, run_dir) -> None:
    c = next(c for c in target.comparisons() if c.name == name)
    row = results.evaluate(c, steps)
    run_results.comparisons.append(row)
    attach_ttft(target, steps, run_dir)
    assert row["verdict"] == "pass", results.describe(row)


def test_step1_cold_on_instance_1(instances, dataset_a, steps, target, phases, run_dir, run_results):
    measure("cold", "step 1 cold", instances[0], instances, dataset_a, target, phases, run_dir, run_results, steps)


def test_evict_dataset_a_from_instance_1(instances, steps, target, phases, run_dir, run_results):
    ev = target.benchmark.eviction
    if ev is None:
        pytest.skip("benchmark.eviction is not set: step 2 measures instance 1's own prefix cache, as the seed did")
    need_cold(steps)
    dataset_b = dataset(instances, target, ev.seed, ev.num_prompts or target.benchmark.num_prompts, phases,
                        "dataset B")
    measure("evict", "eviction with dataset B", instances[0], instances, dataset_b, target, phases, run_dir,
            run_results, steps)


def test_step2_local_hit_on_instance_1(instances, dataset_a, steps, target, phases, run_dir, run_results):
    need_cold(steps)
    measure("local_hit", "step 2 local hit", instances[0], instances, dataset_a, target, phases, run_dir,
            run_results, steps)
    check("local_hit_ttft_fraction", target, steps, run_results, run_dir)


def test_step3_cross_instance_hit_on_instance_2(instances, dataset_a, steps, target, phases, run_dir,
                                                run_results):
    need_cold(steps)
    peer = instances[1]
    measure("cross_instance_hit", "step 3 cross-instance hit", peer, instances, dataset_a, target, phases,
            run_dir, run_results, steps)
    ev = run_results.steps["cross_instance_hit"]["evidence"]
    external = ev[peer.name].get("vllm:external_prefix_cache_hits_total", 0)
    local = ev[peer.name].get("vllm:prefix_cache_hits_total", 0)
    pool_gets = {k: v for k, v in ev["master"].items() if "get" in k or "hit" in k}
    evidence = (f"{peer.name} external (pool) prefix-cache hits +{external:.0f} tokens, local hits +{local:.0f}; "
                f"master get counters: {pool_gets or 'unchanged'}")
    print(f"step 3 evidence: {evidence}")
    assert external > 0, (f"step 3 (cross-instance hit on {peer.name}): no KV came from the pool ({evidence}). "
                          f"Check the connector in {peer.name}'s log and the master.")
    check("cross_instance_ttft_fraction", target, steps, run_results, run_dir)


def test_declared_comparison(comparison, target, steps, run_results, run_dir):
    if comparison is None:
        pytest.skip("the target declares no benchmark.comparisons beyond the two thresholds")
    need_cold(steps)
    check(comparison.name, target, steps, run_results, run_dir)


def test_pool_output_equals_cold_output(instances, steps, target, run_results):
    """Greedy decoding of the same prompt must not change when its KV comes from the pool."""
    c = target.benchmark.correctness
    if c.mode == "off":
        pytest.skip("benchmark.correctness.mode is off for this target")
    if "cold" not in steps or "cross_instance_hit" not in steps:
        pytest.skip("step 1 or step 3 did not complete")
    token_ids = bench.token_ids_via(instances[0].url, target.model.served_name)
    verdict = results.compare_outputs(steps["cold"], steps["cross_instance_hit"], c.mode, c.first_tokens,
                                      token_ids)
    run_results.correctness = verdict
    assert verdict["checked"] > 0, "no prompt succeeded in both step 1 and step 3"
    assert not verdict["mismatches"], (
        f"{len(verdict['mismatches'])} of {verdict['checked']} prompts gave another output from the pool than "
        f"cold (benchmark.correctness.mode {c.mode}); first: prompt {verdict['mismatches'][0]['index']}: "
        f"cold {verdict['mismatches'][0]['cold']!r} vs pool {verdict['mismatches'][0]['pool']!r}")


def test_no_transfer_failures_in_logs(instance, instance_spec, target, run_results, steps):
    """A failed pool load is recomputed, so TTFT can look fine while transfers fail: read the logs."""
    if instance_spec.kv_transfer_config is None:
        pytest.skip(f"{instance.name} does not use the pool")
    lines = results.transfer_failures(instance.process.log(), target.mooncake.transfer_failure_patterns)
    run_results.transfer_failures[instance.name] = lines
    assert not lines, (f"{instance.name}: {len(lines)} KV transfer failure line(s) in its log "
                       f"(mooncake.transfer_failure_patterns), first: {lines[0]}")
