"""The resilience stage on cpu-local-resilience, run as a user runs it (`pytest -m resilience`): green for the right
reasons, and each row red for its own reason when what it expects is broken; nothing left behind either way."""

from __future__ import annotations

import json

import pytest

from harness.config import CONFIGS, ROOT, load_target

from .runner import leftovers, run_suite

pytestmark = pytest.mark.kit

TARGET = load_target("cpu-local-resilience")
ROW = "test_resilience::"


def new_run_dir(before: set[str]) -> dict:
    [new] = {p.name for p in (ROOT / "reports").glob(f"{TARGET.name}-*")} - before
    return json.loads((ROOT / "reports" / new / "resilience.json").read_text())


def run_dirs() -> set[str]:
    return {p.name for p in (ROOT / "reports").glob(f"{TARGET.name}-*")}


def test_resilience_stage_is_green_for_the_right_reasons(tmp_path):
    before = run_dirs()
    run = run_suite(tmp_path, f"--target={TARGET.name}", "tests/resilience", mark="resilience", timeout=1200)
    print(f"resilience: rc {run.rc}, {run.seconds:.0f} s; failing {run.failing()}")
    assert run.rc == 0 and set(run.verdicts.values()) == {"passed"} and len(run.verdicts) == 4, (
        run.failing(), run.output[-3000:])
    rows = new_run_dir(before)
    restart = rows["master_restart"]
    assert restart["keys_before"] > 0 and all(x["cached_tokens"] == 0 for x in restart["after"] if x["status"] == "ok")
    assert restart["recovered_after_s"] is not None
    killed = rows["instance_1_killed"]  # rounds until none failed
    assert {o["outcome"] for r in killed for o in r["outcomes"]} <= {"hit", "miss", "failed"}
    assert all(o["outcome"] != "failed" for o in killed[-1]["outcomes"])
    assert rows["instance_1_restarted"]["cross_instance_hit_after_s"] is not None
    assert rows["pool_full"]["evicted_keys"] > 0 and rows["pool_full"]["failed"] == 0
    assert leftovers() == []


# The negative controls, in one session: the bounds broken (the target's resilience section) and how each row's
# failure must read. recovery_s serves rows 1 and 2: a hit back, and the failures' end, after the disruption.
BROKEN = {"recovery_s": 0.01, "ttft_spike_ratio": 0.01, "fill_factor": 0.2}
FAILS = {
    "test_master_restart_loses_the_pool_and_recovers": "no cross-instance hit within resilience.recovery_s 0.01 s",
    "test_instance_1_killed_after_filling_the_pool": "beyond resilience.recovery_s 0.01 s (vLLM failed",
    "test_instance_1_restarted_keeps_the_peer_within_bounds": "more than resilience.ttft_spike_ratio 0.01",
    "test_pool_full_evicts_and_remaining_hits_are_right": "the master evicted nothing",
}


def test_each_row_fails_for_its_own_reason_when_its_bound_is_broken(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(f"extends: {CONFIGS / 'cpu-local-resilience.yaml'}\n"
                    "resilience: {" + ", ".join(f"{k}: {v}" for k, v in BROKEN.items()) + "}\n")
    run = run_suite(tmp_path, f"--target={path}", "tests/resilience", mark="resilience", timeout=1200)
    failing = run.failing()
    print(f"resilience, bounds broken: rc {run.rc}, {run.seconds:.0f} s; {failing}")
    assert set(failing) == {ROW + name for name in FAILS}, (failing, run.output[-3000:])
    for name, fragment in FAILS.items():
        assert fragment in failing[ROW + name], (name, failing[ROW + name])
    assert leftovers() == []
