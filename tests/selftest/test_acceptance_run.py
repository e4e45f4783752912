"""The acceptance suite itself, run for real on cpu-local: it passes, brings up only what a stage needs,
gives the same verdicts under pytest-xdist with one deployment, and leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.config import ROOT
from harness.results_file import RunResults

from .runner import TARGET, faulty_target, leftovers, run_dirs, run_suite

pytestmark = pytest.mark.kit


def test_stage_1_alone_starts_the_container_and_nothing_else(tmp_path):
    run = run_suite(tmp_path, "tests/acceptance/test_01_environment.py")
    out = run.output
    assert run.rc == 0, out[-3000:]
    assert set(run.verdicts.values()) == {"passed"} and len(run.verdicts) == 1 + 7 * len(TARGET.npu.devices)
    assert f"container {TARGET.container.name} started" in out
    assert "mooncake master" not in out and "instances ready" not in out, "stage 1 must not start master/instances"
    assert leftovers() == []


def test_stage_2_inspects_the_container_when_the_npu_tools_are_on_the_host(tmp_path):
    # npu.checks_in: host moves hccn_tool and npu-smi to this machine, not the container's devices, mounts and
    # /dev/shm: this machine has no /dev/davinci0 and another /dev/shm size, so looking here would be a false red.
    target = faulty_target(tmp_path, lambda d: d["npu"].update(checks_in="host"))
    run = run_suite(tmp_path, f"--target={target}", "tests/acceptance/test_02_container.py")
    assert run.rc == 0 and set(run.verdicts.values()) == {"passed"}, run.failing() or run.output[-3000:]
    assert leftovers() == []


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    """The whole suite on cpu-local, serially, and the folder of its reports: one deployment for the tests below."""
    tmp = tmp_path_factory.mktemp("serial")
    before = run_dirs()
    run = run_suite(tmp, f"--alluredir={tmp / 'allure'}")
    return run, run_dirs() - before, tmp


def test_full_run_passes_for_the_right_reasons(serial_run):
    serial, new, tmp_path = serial_run
    serial_verdicts, out = serial.verdicts, serial.output
    assert serial.rc == 0, out[-4000:]
    skipped = {k for k, v in serial_verdicts.items() if v == "skipped"}
    nights = "test_06_nights::test_tonight_against_the_last_nights"
    assert skipped == {"test_05_kv_pool::test_declared_comparison[none-declared]", nights}, serial_verdicts
    assert "no --history DIR" in serial.messages[nights], serial.messages[nights]  # skipped for that reason only
    assert set(serial_verdicts.values()) == {"passed", "skipped"}, serial_verdicts
    print(out[out.find("deployment timings"):][:800])
    assert leftovers() == []

    # The run's results file (read through its model: it validates against docs/results.schema.json) and the Allure
    # results, then the offline report made from them.
    [run] = new
    results = RunResults.read(ROOT / "reports" / run / "results.json")
    assert {c.name: c.verdict for c in results.comparisons} == {
        "local_hit_ttft_fraction": "pass", "cross_instance_ttft_fraction": "pass"}
    assert set(results.steps) == {"cold", "evict", "local_hit", "cross_instance_hit"}
    # After dataset B, step 2 reads dataset A back from the pool, as step 3 does, by every declared source.
    assert {s: v.served_by for s, v in results.steps.items()} == {
        "cold": "neither", "evict": "neither", "local_hit": "pool", "cross_instance_hit": "pool"}
    probe = results.correctness.summary
    assert probe.checked == probe.equal == 8 and results.correctness.miss_control.cached_tokens == 0
    assert (tmp_path / "allure" / "environment.properties").is_file()
    assert (tmp_path / "allure" / "categories.json").is_file()
    made = subprocess.run([sys.executable, "-m", "commands.report", "--results", str(tmp_path / "allure"), "--out",
                           str(tmp_path / "html"), "--history", str(tmp_path / "history")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stdout + made.stderr
    assert (tmp_path / "html" / "index.html").stat().st_size > 1_000_000


def test_same_verdicts_with_xdist_one_deployment_and_aisbench(serial_run, tmp_path):
    # One run changes two things at once to spare a third deployment: pytest-xdist (one deployment for both
    # workers) and the load generator (aisbench, the seed's own, installed on first use): both must leave every
    # verdict as the serial run's.
    serial = serial_run[0]
    assert serial.rc == 0, "the serial run failed: see test_full_run_passes_for_the_right_reasons"
    before = run_dirs()
    parallel = run_suite(tmp_path, "-n", "2", "--client", "aisbench", timeout=3000)
    assert parallel.rc == 0, parallel.output[-4000:]
    assert parallel.verdicts == serial.verdicts
    new = run_dirs() - before
    assert len(new) == 1, f"-n 2 brought up {len(new)} deployments: {sorted(new)}"
    [run] = new
    results = RunResults.read(ROOT / "reports" / run / "results.json")
    assert {s: v.client for s, v in results.steps.items()} == dict.fromkeys(results.steps, "aisbench")
    assert {s: v.served_by for s, v in results.steps.items()} == {
        "cold": "neither", "evict": "neither", "local_hit": "pool", "cross_instance_hit": "pool"}
    records = (ROOT / "reports" / run / "cold.jsonl").read_text().splitlines()
    assert len(records) == TARGET.benchmark.num_prompts and all(json.loads(r)["ttft_s"] > 0 for r in records)
    assert leftovers() == []
