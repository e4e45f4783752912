"""The version matrix on CPU: the whole acceptance suite on each target built from the seed's versions, beside
today's cpu-local (tests/selftest/test_acceptance_run.py):
- cpu-local-seed-mooncake: the seed's Mooncake 0.3.7.post2 (master, pool probe, the instances' store client)
  under vLLM 0.32's own MooncakeStoreConnector (build arg EXTRA_WHEELS over the 0.32 lock);
- cpu-local-seed: vLLM 0.11.0, Mooncake 0.3.7.post2 and vllm-ascend v0.11.0rc2's MooncakeConnectorStoreV1 (build
  args VLLM and ASCEND_CONNECTOR: the 0.11.0 lock, the connector unpacked from its wheel).
Each image is built on first use, as a user's first run would build it."""

from __future__ import annotations

import pytest

from harness.config import ROOT, load_target
from harness.results_file import RunResults

from .runner import leftovers, run_suite

pytestmark = pytest.mark.kit

# target -> (what results.json's versions must say, the evidence sources that must each show pool KV in step 3,
# which cache served step 2). Both inherit cpu-local's dataset B, so step 2 reads dataset A from the pool; on the
# seed's connector its own cache still serves the few prompts whose blocks vllm-ascend 0.11.0rc2 never gave back
# (2-3 of 40 in every run measured: kv_cache_usage_perc stays above 0 while idle), so "both" (or "pool" in a run
# where none is kept); the acceptance test bounds what the own cache served by the blocks held before the step.
MATRIX = {
    "cpu-local-seed-mooncake": ({"mooncake-transfer-engine-non-cuda": "0.3.7.post2"},
                                {"external_hits", "cached_tokens", "master_gets"}, {"pool"}),
    "cpu-local-seed": ({"mooncake-transfer-engine-non-cuda": "0.3.7.post2", "vllm": "0.11.0+cpu",
                        "vllm-ascend-connector": "0.11.0rc2"},
                       {"cached_tokens", "master_gets", "connector_log"}, {"both", "pool"}),
}
# cpu-local-seed-mooncake differs from cpu-local only in the Mooncake under vLLM 0.32's connector: stages 1-4 and steps
# 1 and 3 (the pool's side of it) are what it adds; dataset B, step 2 and the probe are vLLM's, run on cpu-local and
# on cpu-local-seed (~2 min of CI on an AVX2-only machine).
SELECT = {"cpu-local-seed-mooncake": "not test_05 and not test_06 or step1 or step3 or transfer_failures"}
# The only skips each run may have, with their reasons: any other skip hides a check the version matrix exists for.
SKIPS = {
    "cpu-local-seed-mooncake": {},  # its selection leaves out the declared comparisons
    "cpu-local-seed": {"test_05_kv_pool::test_declared_comparison[none-declared]": "declares no benchmark.comparisons",
                       "test_06_nights::test_tonight_against_the_last_nights": "no --history DIR"},
}


@pytest.mark.parametrize("name", list(MATRIX))
def test_seed_version_target_is_green_for_the_right_reasons(name, tmp_path):
    target = load_target(name)
    versions, sources, step2 = MATRIX[name]
    before = {p.name for p in (ROOT / "reports").glob(f"{target.name}-*")}
    select = ["-k", SELECT[name]] if name in SELECT else []
    run = run_suite(tmp_path, f"--target={target.name}", *select, timeout=2400)
    assert run.rc == 0, run.output[-4000:]
    assert set(run.verdicts.values()) <= {"passed", "skipped"}, run.failing()
    skipped = {t: run.messages[t] for t, v in run.verdicts.items() if v == "skipped"}
    assert set(skipped) == set(SKIPS[name]), f"skipped {skipped}, expected only {SKIPS[name]}"
    for test, reason in SKIPS[name].items():
        assert reason in skipped[test], (test, skipped[test])
    [new] = {p.name for p in (ROOT / "reports").glob(f"{target.name}-*")} - before
    results = RunResults.read(ROOT / "reports" / new / "results.json")
    assert {k: results.versions.get(k) for k in versions} == versions
    steps = results.steps
    # After dataset B, step 2 reads the pool (all but the held blocks); step 3 reads the pool.
    if name not in SELECT:
        assert steps["local_hit"].served_by in step2, steps["local_hit"]
        assert results.correctness.summary.equal >= 7  # max_inconclusive 1
    assert steps["cross_instance_hit"].served_by == "pool", steps["cross_instance_hit"]
    assert {e.source: e.pool > 0 for e in steps["cross_instance_hit"].pool_evidence} == dict.fromkeys(sources, True)
    print(f"{name}: {run.seconds:.0f} s; step 3 evidence {steps['cross_instance_hit'].pool_evidence}")
    assert leftovers() == []
