"""The version matrix on CPU: the whole acceptance suite on the seed's Mooncake (0.3.7.post2: master, pool probe
and the instances' store client) beside today's cpu-local. The image is built on first use (build arg
EXTRA_WHEELS over the same lock), as a user's first run would build it."""

import json

import pytest

from harness.config import ROOT, load_target

from .runner import leftovers, run_suite

pytestmark = pytest.mark.kit

SEED = load_target("cpu-local-seed-mooncake")


def test_seed_mooncake_target_is_green_for_the_right_reasons(tmp_path):
    before = {p.name for p in (ROOT / "reports").glob(f"{SEED.name}-*")}
    run = run_suite(tmp_path, f"--target={SEED.name}", timeout=2400)
    assert run.rc == 0, run.output[-4000:]
    assert set(run.verdicts.values()) == {"passed", "skipped"}, run.failing()
    [new] = {p.name for p in (ROOT / "reports").glob(f"{SEED.name}-*")} - before
    results = json.loads((ROOT / "reports" / new / "results.json").read_text())
    assert results["versions"]["mooncake-transfer-engine-non-cuda"] == "0.3.7.post2"
    step3 = results["steps"]["cross_instance_hit"]
    assert step3["served_by"] == "pool"
    assert {e["source"]: e["pool"] > 0 for e in step3["pool_evidence"]} == {
        "external_hits": True, "cached_tokens": True, "master_gets": True}
    assert results["correctness"]["summary"]["equal"] == 8
    print(f"seed Mooncake: {run.seconds:.0f} s; step 3 evidence {step3['pool_evidence']}")
    assert leftovers() == []
