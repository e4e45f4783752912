"""--attach: the suite runs in a long-lived container the user started, which it never removes, so every process it
started there must be stopped by its owner on every path. Here: an instance 2 that exits during start-up, and a
Ctrl-C while the master is waiting to become ready. Afterwards the user's container runs only what it ran before."""

from __future__ import annotations

import signal

import docker
import pytest

import kit
from harness.owner import Owner
from harness.runtime import Container, start_container

from .runner import INTERRUPTED, TARGET, Moment, faulty_target, happened, interrupt_at, run_suite

pytestmark = pytest.mark.kit


def suite_processes(c: Container) -> list[str]:
    """What of the suite runs in the container: masters, instances, their launchers."""
    ps = c.exec(["ps", "-eo", "pid,args"]).output.splitlines()[1:]
    return [line.strip() for line in ps if any(k in line for k in ("mooncake_master", "vllm", "launcher"))]


@pytest.fixture
def users_container():
    """The user's container: the target's image and name, started outside the suite, removed by this test."""
    client = docker.from_env()
    c = start_container(client, TARGET, kit.ensure_kit(TARGET), Owner.this_process("users-own"))
    try:
        yield c
    finally:
        c.remove()


def test_failing_instance_2_under_attach_leaves_no_process(users_container, tmp_path):
    # A new list: in cpu-local.yaml both instances share one args list (a YAML anchor).
    bad = TARGET.instances[1].args + ["--max-model-len", "not-a-number"]
    target = faulty_target(tmp_path, lambda d: d["instances"][1].update(args=bad))
    run = run_suite(tmp_path, "--attach", f"--target={target}", "tests/acceptance/test_04_serving.py")
    assert run.rc == 1, run.output[-3000:]
    assert run.failing() and all("instance-2 exited" in m for m in run.failing().values()), run.failing()
    assert users_container.is_running(), "--attach must never remove the user's container"
    assert suite_processes(users_container) == [], run.output[-3000:]


def test_ctrl_c_while_the_master_waits_under_attach_leaves_no_process(users_container, tmp_path):
    # A master that hangs in start-up (it never serves /health), so the wait goes on until the Ctrl-C.
    hung = ["bash", "-c", "exec -a mooncake_master-hung sleep 600"]
    target = faulty_target(tmp_path, lambda d: d["mooncake"]["master"].update(command=hung, ready_timeout_s=300))
    run = interrupt_at(Moment("master", at="begin"), signal.SIGINT, "--attach", f"--target={target}",
                       events=tmp_path / "events.jsonl")
    stopped = Moment("process stopped", process_name="mooncake-master", outcome="stopped")  # by its owner, the wait
    assert run.rc == INTERRUPTED and happened(run.events, stopped), run.output[-3000:]
    assert run.took < 30, f"teardown took {run.took:.0f} s:\n{run.output[-3000:]}"
    assert users_container.is_running()
    assert suite_processes(users_container) == [], run.output[-3000:]
