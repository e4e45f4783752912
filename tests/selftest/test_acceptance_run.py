"""The acceptance suite itself, run for real on cpu-local: it passes, brings up only what a stage needs,
gives the same verdicts under pytest-xdist with one deployment, and leaves nothing behind."""

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import docker
import pytest

from harness.config import ROOT, load_target
from harness.mooncake import port_accepts
from harness.runtime import LABEL

pytestmark = pytest.mark.kit
TARGET = load_target("cpu-local")


def run_suite(tmp_path, *args: str, timeout: float = 1500) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """`pytest -m acceptance ARGS` in a subprocess; returns the run and {test id: outcome} from JUnit."""
    junit = tmp_path / f"junit-{time.monotonic_ns()}.xml"
    run = subprocess.run([sys.executable, "-m", "pytest", "-m", "acceptance", "-p", "no:cacheprovider", "-s",
                          f"--junitxml={junit}", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    verdicts = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        verdicts[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return run, verdicts


def leftovers() -> list[str]:
    """Whatever a run of the suite could have left: its containers, processes and listening ports."""
    found = [f"container {c.name}" for c in docker.from_env().containers.list(all=True, filters={"label": LABEL})]
    ps = subprocess.run(["pgrep", "-fa", "vllm serve|mooncake_master"], capture_output=True, text=True).stdout
    found += [f"process {line}" for line in ps.splitlines()]
    ports = [TARGET.mooncake.master.port, TARGET.mooncake.master.metrics_port, *(x.port for x in TARGET.instances)]
    found += [f"port {p}" for p in ports if port_accepts("127.0.0.1", p, timeout=0.3)]
    return found


def run_dirs() -> set[str]:
    return {p.name for p in (ROOT / "reports").glob(f"{TARGET.name}-*") if p.is_dir()}


def test_stage_1_alone_starts_the_container_and_nothing_else(tmp_path):
    run, verdicts = run_suite(tmp_path, "tests/acceptance/test_01_environment.py")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert set(verdicts.values()) == {"passed"} and len(verdicts) == 1 + 7 * len(TARGET.npu.devices)
    assert f"container {TARGET.container.name} started" in out
    assert "mooncake master" not in out and "instances ready" not in out, "stage 1 must not start master/instances"
    assert leftovers() == []


def test_full_run_passes_then_same_verdicts_with_xdist_and_one_deployment(tmp_path):
    before = run_dirs()
    serial, serial_verdicts = run_suite(tmp_path, f"--alluredir={tmp_path / 'allure'}")
    out = serial.stdout + serial.stderr
    assert serial.returncode == 0, out[-4000:]
    assert {v for k, v in serial_verdicts.items() if "kv_pool" not in k} == {"passed"}, serial_verdicts
    assert all(v in ("passed", "skipped") for v in serial_verdicts.values()), serial_verdicts
    print(out[out.find("deployment timings"):][:800])
    assert leftovers() == []

    # The run's results file and the Allure results, then the offline report made from them.
    [run] = run_dirs() - before
    results = json.loads((ROOT / "reports" / run / "results.json").read_text())
    assert {c["name"]: c["verdict"] for c in results["comparisons"]} == {
        "local_hit_ttft_fraction": "pass", "cross_instance_ttft_fraction": "pass"}
    assert set(results["steps"]) == {"cold", "local_hit", "cross_instance_hit"}
    assert (tmp_path / "allure" / "environment.properties").is_file()
    assert (tmp_path / "allure" / "categories.json").is_file()
    made = subprocess.run([sys.executable, "-m", "harness.report", "--results", str(tmp_path / "allure"), "--out",
                           str(tmp_path / "html"), "--history", str(tmp_path / "history")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stdout + made.stderr
    assert (tmp_path / "html" / "index.html").stat().st_size > 1_000_000

    before = run_dirs()
    parallel, parallel_verdicts = run_suite(tmp_path, "-n", "2")
    assert parallel.returncode == 0, (parallel.stdout + parallel.stderr)[-4000:]
    assert parallel_verdicts == serial_verdicts
    new = run_dirs() - before
    assert len(new) == 1, f"-n 2 brought up {len(new)} deployments: {sorted(new)}"
    assert leftovers() == []
