"""Every negative control runs in at least one tier of the self-tests (tests/selftest/tiers.py), and the landing tier
keeps each fault row's attribution and each signal at each moment. The controls are listed from their own data (the
fault rows, the signal moments, the version targets, the targets under configs/), the tiers from a real collection
through the same `--tier` selection `.ci/run` and `tox -e selftest-full` use, so neither a new control nor a change to
the selection can leave a control out unnoticed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import CONFIGS, ROOT
from tests.selftest.test_endurance_run import CONTROLS as ENDURANCE_CONTROLS
from tests.selftest.test_faults import FAULTS, OTHER_DRIVERS
from tests.selftest.test_pool_cost_run import CONTROLS as POOL_COST_CONTROLS
from tests.selftest.test_signals import MOMENTS
from tests.selftest.test_versions import MATRIX

SIGNALS = ("SIGINT", "SIGTERM")

# Each cpu-local target's own green run: a target no self-test runs proves nothing about its stack.
TARGET_RUNS = {
    "cpu-local": "test_acceptance_run.py::test_full_run_passes_for_the_right_reasons",
    "cpu-local-2node": "test_two_nodes.py::test_two_node_run_is_green_reads_kv_across_the_nodes_and_leaves_nothing",
    "cpu-local-resilience": "test_resilience_run.py::test_resilience_stage_is_green_for_the_right_reasons",
    **{name: f"test_versions.py::test_seed_version_target_is_green_for_the_right_reasons[{name}]" for name in MATRIX},
}

# Prints what a tier runs after the selection, with the tests that carry a skip mark (those run in no tier).
LISTER = '''
import json
def pytest_collection_finish(session):
    for item in session.items:
        skipped = any(m.name in ("skip", "skipif") for m in item.iter_markers())
        print("ITEM " + json.dumps([item.nodeid.split("tests/selftest/", 1)[-1], skipped]))
'''


def collect(tier: str, tmp_path: Path) -> dict[str, bool]:
    """test id (relative to tests/selftest) -> carries a skip mark, for the tests `--tier tier` runs."""
    (tmp_path / "tier_lister.py").write_text(LISTER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "-p", "tier_lister", "tests/selftest", "--tier", tier],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"collecting the {tier} tier failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
    return dict(json.loads(line[5:]) for line in out.stdout.splitlines() if line.startswith("ITEM "))


def controls() -> dict[str, str]:
    """Every negative control -> a prefix of the test id that runs it (any repeat of it counts)."""
    found = {f"fault row {f.name!r}": f"test_faults.py::test_fault_is_caught[{f.name}]" for f in FAULTS}
    found["fault row 'name taken by a foreign container'"] = "test_faults.py::test_name_taken_by_a_foreign_container"
    found["fault row 'name taken by another run's deployment'"] = \
        "test_faults.py::test_name_taken_by_another_runs_deployment"
    found |= {f"{s} at {m!r}": f"test_signals.py::test_signal_leaves_nothing_behind[{m}-{s}-"
              for m in MOMENTS for s in SIGNALS}
    found |= {f"{s} through tox": f"test_signals.py::test_signal_through_tox_leaves_nothing_behind[{s}]"
              for s in ("Ctrl-C", "SIGTERM")}
    found |= {f"link down on the {d} driver": f"test_faults.py::test_stage_1_on_another_drivers_spellings[{d}]"
              for d in OTHER_DRIVERS}
    found["preflight on a host without NPUs"] = "test_arm64_host.py::test_preflight_is_red_on_exactly_the_missing_npu"
    found["preflight on a Mooncake-less image"] = "test_arm64_host.py::test_preflight_tells_a_mooncake_less_image"
    found["a crash inside a fixture"] = "test_signals.py::test_crash_inside_a_fixture_tears_down_what_came_before"
    found["resilience bounds broken"] = ("test_resilience_run.py::"
                                         "test_each_row_fails_for_its_own_reason_when_its_bound_is_broken")
    found |= {f"endurance control {c.name!r}": f"test_endurance_run.py::test_endurance_control[{c.name}]"
              for c in ENDURANCE_CONTROLS}
    found |= {f"pool-cost control {c.name!r}": f"test_pool_cost_run.py::test_pool_cost_control[{c.name}]"
              for c in POOL_COST_CONTROLS}
    found["report without the CA"] = "test_report_tox.py::"
    found["hostile values"] = "test_hostile.py::"
    found["--attach, instance 2 fails"] = "test_attach.py::test_failing_instance_2_under_attach"
    found["--attach, Ctrl-C while the master waits"] = "test_attach.py::test_ctrl_c_while_the_master_waits"
    found |= {f"target {name}": test for name, test in TARGET_RUNS.items()}
    return found


@pytest.fixture(scope="module")
def tiers(tmp_path_factory) -> dict[str, dict[str, bool]]:
    tmp = tmp_path_factory.mktemp("tiers")
    return {tier: collect(tier, tmp) for tier in ("landing", "full")}


def runs(tier: dict[str, bool], prefix: str) -> bool:
    return any(test.startswith(prefix) and not skipped for test, skipped in tier.items())


def test_every_cpu_local_target_has_a_green_run():
    names = {p.stem for p in CONFIGS.glob("cpu-local*.yaml")}
    assert names == set(TARGET_RUNS), f"targets without a self-test run: {sorted(names - set(TARGET_RUNS))}"


def test_every_negative_control_runs_in_some_tier(tiers):
    missing = [name for name, prefix in controls().items()
               if not runs(tiers["landing"], prefix) and not runs(tiers["full"], prefix)]
    assert missing == [], f"negative controls in no tier: {missing}"


def test_the_landing_tier_keeps_every_fault_row_and_each_signal_at_each_moment(tiers):
    kinds = ("fault row", "SIGINT", "SIGTERM", "Ctrl-C", "link down")
    cheap = {k: v for k, v in controls().items() if k.startswith(kinds)}
    missing = [name for name, prefix in cheap.items() if not runs(tiers["landing"], prefix)]
    assert missing == [], f"not in the landing tier: {missing}"


def test_the_full_tier_runs_everything_the_landing_tier_runs(tiers):
    assert set(tiers["landing"]) - set(tiers["full"]) == set()
