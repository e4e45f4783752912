"""fixtures/deployment.py as thin steps of harness/deployment.py's Deployment, in a real pytest session on cpu-local
with stand-ins for Docker, the master and the instances (no Docker): the early launch starts the instances at the
first acceptance test when a later test needs them (and not when none does), a failed step is each dependent test's
error with the suite's message while the others pass, and the session ends by undoing everything in reverse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness import events

ROOT = Path(__file__).resolve().parents[2]

CONFTEST = '''
import pytest
from harness import deployment, mooncake, serving


def record(what):
    print(f"@@ {what}", flush=True)


class Container:
    def __init__(self, name, owned=True):
        self.name, self.owned = name, owned
    def put_file(self, path, text): pass
    def remove_file(self, path): pass
    def logs(self): return ""
    def remove(self): record(f"remove {self.name}")


class Proc:
    pid = 7
    def __init__(self, name): self.name = name
    def stop(self): record(f"stop {self.name}")
    def alive(self): return True
    def tail(self, n=40): return ""


def start_master(container, target, name=mooncake.MASTER):
    if "FAIL_AT" == "master":
        raise mooncake.DeploymentError("mooncake master exited during start-up")
    record("start master")
    return Proc(name)


deployment.claim_container = lambda client, name, owner, replace: None
deployment.start_container = lambda client, target, image, owner, node: record("start container") or Container(
    target.container_name(node))
deployment.attach_container = lambda client, name: record("attach container") or Container(name, owned=False)
deployment.save_logs = lambda c, run_dir, name: record(f"save {name}.log")
mooncake.start_master = start_master
mooncake.write_config = lambda container, target, node: "{}"
mooncake.require_alive = lambda master: None
serving.start_instances = lambda containers, target: record("launch") or [
    serving.RunningInstance(x, Proc(x.name)) for x in target.instances]
serving.wait_ready = lambda instances, watch: record("ready")


@pytest.fixture(scope="session")
def docker_clients(target):
    return {n.name: None for n in target.node_list()}


@pytest.fixture(scope="session")
def image():
    return "an-image"


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    (path / "logs").mkdir()
    return path
'''

TESTS = '''
import pytest

pytestmark = pytest.mark.acceptance


def test_1_environment(container):
    print("@@ test 1 runs", flush=True)


def test_2_serving(instances):
    print("@@ test 2 runs", flush=True)
'''


def session(tmp_path: Path, *options: str, fail: str = "", tests: str = TESTS,
            conftest: str = CONFTEST) -> subprocess.CompletedProcess:
    conftest = "pytest_plugins = ['fixtures.events', 'fixtures.deployment']\n" + conftest.replace("FAIL_AT", fail)
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_stages.py").write_text(tests)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["PYTHONPATH"] = str(ROOT)
    env["DOCKER_HOST"] = "tcp://127.0.0.1:1"  # a remote daemon: the host is not checked for the target
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-q", "-m", "acceptance",
                           "--rootdir", str(tmp_path), "-c", os.devnull, *options, str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def records(run: subprocess.CompletedProcess) -> list[str]:
    return [line.split("@@ ", 1)[1] for line in run.stdout.splitlines() if "@@ " in line]


def test_the_early_launch_starts_the_instances_before_the_first_test_runs_and_all_is_undone_in_reverse(tmp_path):
    run = session(tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert records(run) == ["start container", "start master", "launch", "test 1 runs", "ready", "test 2 runs",
                            "save container.log", "remove kvpool-cpu-local"]
    assert "[deployment] container kvpool-cpu-local removed" in run.stdout


def test_no_early_launch_when_no_test_needs_the_instances(tmp_path):
    run = session(tmp_path, tests=TESTS.split("\n\ndef test_2")[0] + "\n")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert records(run) == ["start container", "test 1 runs", "save container.log", "remove kvpool-cpu-local"]


def test_a_failed_master_is_the_error_of_the_tests_that_need_it_only(tmp_path):
    run = session(tmp_path, fail="master")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert records(run) == ["start container", "test 1 runs", "save container.log", "remove kvpool-cpu-local"]
    assert "1 passed, 1 error" in run.stdout
    assert "deployment: the Mooncake master failed: mooncake master exited during start-up" in run.stdout


def test_attach_stops_the_instances_then_the_master_and_leaves_the_container(tmp_path):
    run = session(tmp_path, "--attach")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    got = records(run)
    assert got[:6] == ["attach container", "start master", "launch", "test 1 runs", "ready", "test 2 runs"]
    assert sorted(got[6:8]) == ["stop instance-1", "stop instance-2"]  # at once
    assert got[8:] == ["stop mooncake-master", "save container.log"]


def test_keep_leaves_everything_running(tmp_path):
    run = session(tmp_path, "--keep-deployment")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert records(run)[-1:] == ["save container.log"]
    assert "[deployment] --keep-deployment: container kvpool-cpu-local left running" in run.stdout


# The run's folder made by the suite's own run_dir fixture, under tmp_path instead of the repository's reports/.
OWN_RUN_DIR = CONFTEST.split('@pytest.fixture(scope="session")\ndef run_dir')[0] + """
import fixtures.deployment
fixtures.deployment.ROOT = __import__("pathlib").Path(__file__).parent
"""


def phases(events: list[dict]) -> list[str]:
    return [e["phase"] + (f" {e['at']}" if "at" in e else "") for e in events if "phase" in e]


def test_the_session_writes_its_phases_to_the_run_folders_events_file(tmp_path):
    run = session(tmp_path, conftest=OWN_RUN_DIR)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [path] = (tmp_path / "reports").glob("cpu-local-*/events.jsonl")
    got = events.read(path)
    assert phases(got) == ["container begin", "container started", "container end", "master begin", "master end",
                           "instances ready begin", "instances launched", "instances ready end", "teardown begin",
                           "container removed", "teardown end"]
    assert got[0]["area"] == "deployment" and got[0]["message"] == "container: starting"
    assert next(e for e in got if e["phase"] == "container removed")["container"] == "kvpool-cpu-local"


def test_events_go_where_the_option_says_and_an_interrupt_is_one_before_the_teardown(tmp_path):
    interrupted = TESTS.replace('print("@@ test 1 runs", flush=True)', 'raise KeyboardInterrupt("signal 15")')
    run = session(tmp_path, f"--events={tmp_path / 'mine.jsonl'}", conftest=OWN_RUN_DIR, tests=interrupted)
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    assert list((tmp_path / "reports").glob("*/events.jsonl")) == []  # not in the run's folder as well
    got = phases(events.read(tmp_path / "mine.jsonl"))
    assert got[got.index("interrupted"):] == ["interrupted", "teardown begin", "container removed", "teardown end"]
