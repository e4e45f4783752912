"""harness/deployment.py's one owner of the deployment, with stand-ins for Docker, the master and the instances that
record what is done to them: the steps in order, each undo in reverse on close(), a failure or a Ctrl-C at each step
undoing that step's part at once and the rest on close(), and the owned / attach / keep policies."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

import pytest
from docker.errors import NotFound

from harness import deployment, mooncake, serving
from harness.config import load_target
from harness.deployment import Deployment, Policy
from harness.owner import Owner
from harness.progress import logger
from harness.runtime import DeploymentError

TWO_NODES = load_target("cpu-local-2node")
ONE_NODE = load_target("cpu-local")
OWNER = Owner("run-1", "2026-01-01T00:00:00+00:00", "someone", "a-host", 42, False)


class Container:
    def __init__(self, name, owned, calls):
        self.name, self.owned, self.calls = name, owned, calls
        self.handle = SimpleNamespace(get_archive=self._archive)

    def _archive(self, path):
        raise NotFound("nothing was started in it")

    def logs(self):
        return f"{self.name}'s output"

    def put_file(self, path, text):
        pass

    def remove_file(self, path):
        pass

    def remove(self):
        self.calls.append(f"remove {self.name}")


class Proc:
    def __init__(self, name, calls):
        self.name, self.calls, self.pid, self.container = name, calls, 7, None

    def stop(self):
        self.calls.append(f"stop {self.name}")

    def alive(self):
        return False


class Phases:
    def __init__(self, calls):
        self.calls = calls

    def phase(self, name, measured=False):
        from contextlib import contextmanager

        @contextmanager
        def timed():
            self.calls.append(f"phase {name}")
            yield
        return timed()

    def begin(self, name, measured=False):
        self.calls.append(f"begin {name}")

    def end(self, name):
        self.calls.append(f"end {name}")


class Said(logging.Handler):
    def __init__(self, calls):
        super().__init__()
        self.calls = calls

    def emit(self, record):
        self.calls.append(f"say {record.getMessage()}")


STEPS = ["network", "container node2", "config", "master", "launch", "ready"]
# close() of an owned two-node deployment: its containers in reverse, then its network.
ALL_OWNED = ["remove kvpool-cpu-local-node2", "remove kvpool-cpu-local-node1", "remove network kvpool-2node"]


@pytest.fixture
def world(monkeypatch, tmp_path):
    """The stand-ins' record (`calls`) and where a step fails (`fail`: step -> exception)."""
    calls, fail = [], {}

    def maybe_fail(step):
        if step in fail:
            calls.append(f"fail {step}")
            raise fail[step]

    def create_network(client, target, owner, replace):
        maybe_fail("network")
        calls.append(f"create network {target.network.name}")

    def start_container(client, target, image, owner, node):
        maybe_fail(f"container {node.name}")
        calls.append(f"start {target.container_name(node)} from {image}")
        return Container(target.container_name(node), True, calls)

    def start_master(container, target, name=mooncake.MASTER):
        maybe_fail("master")
        calls.append(f"start {name} in {container.name}")
        return Proc(name, calls)

    def start_instances(containers, target):
        maybe_fail("launch")
        calls.append("launch " + ", ".join(x.name for x in target.instances))
        return [serving.RunningInstance(x, Proc(x.name, calls), 0.0) for x in target.instances]

    def wait_ready(instances, watch):
        maybe_fail("ready")
        calls.append(f"ready {len(instances)} watching {watch[0].name}")

    def write_config(container, target, node):
        maybe_fail("config")
        calls.append(f"mooncake.json in {container.name}")
        return "{}"

    monkeypatch.setattr(deployment, "create_network", create_network)
    monkeypatch.setattr(deployment, "remove_network", lambda client, name: calls.append(f"remove network {name}"))
    monkeypatch.setattr(deployment, "claim_container", lambda client, name, owner, replace: calls.append(
        f"claim {name}{' (replace)' if replace else ''}"))
    monkeypatch.setattr(deployment, "start_container", start_container)
    def attach_container(client, name):
        maybe_fail(f"container {name.rsplit('-', 1)[1]}")
        return Container(name, False, calls)

    monkeypatch.setattr(deployment, "attach_container", attach_container)
    monkeypatch.setattr(deployment, "remove_if_ours",
                        lambda client, name, owner: calls.append(f"remove if ours {name}"))
    monkeypatch.setattr(mooncake, "start_master", start_master)
    monkeypatch.setattr(mooncake, "write_config", write_config)
    monkeypatch.setattr(mooncake, "require_alive", lambda master: None)
    monkeypatch.setattr(serving, "start_instances", start_instances)
    monkeypatch.setattr(serving, "stop_all", lambda instances: calls.append(
        "stop " + ", ".join(i.process.name for i in instances)))
    monkeypatch.setattr(serving, "wait_ready", wait_ready)
    (tmp_path / "logs").mkdir()
    said = Said(calls)  # the [deployment] lines, in order with what was done
    logger("deployment").addHandler(said)
    yield SimpleNamespace(calls=calls, fail=fail, run_dir=tmp_path)
    logger("deployment").removeHandler(said)


def make(world, target=TWO_NODES, **policy) -> Deployment:
    clients = {n.name: f"client of {n.name}" for n in target.node_list()}
    return Deployment(target, OWNER, clients, world.run_dir, Policy(**policy), phases=Phases(world.calls))


def bring_up(d: Deployment) -> None:
    d.create_network()
    d.claim_names()
    d.start_containers("an-image")
    d.write_config()
    d.start_master()
    d.launch()
    d.wait_ready()


def did(calls) -> list[str]:
    return [c for c in calls if not c.startswith(("say", "phase", "begin", "end"))]


def test_an_owned_deployment_comes_up_in_order_and_goes_in_reverse(world):
    with make(world) as d:
        bring_up(d)
        assert did(world.calls) == [
            "create network kvpool-2node", "claim kvpool-cpu-local-node1", "claim kvpool-cpu-local-node2",
            "start kvpool-cpu-local-node1 from an-image", "start kvpool-cpu-local-node2 from an-image",
            "mooncake.json in kvpool-cpu-local-node1", "mooncake.json in kvpool-cpu-local-node2",
            "start mooncake-master in kvpool-cpu-local-node1", "launch instance-1, instance-2", "ready 2 watching "
            "mooncake-master"]
        world.calls.clear()
    # Owned containers: their removal ends the master and instances in them; no stop one by one.
    assert did(world.calls) == ALL_OWNED
    assert sorted(p.name for p in (world.run_dir / "logs").iterdir()) == ["container-node1.log", "container-node2.log"]
    assert (world.run_dir / "mooncake-node1.json").read_text() == "{}"


def test_the_phases_are_timed_as_before(world):
    with make(world) as d:
        bring_up(d)
    timed = [c for c in world.calls if c.startswith(("phase", "begin", "end"))]
    assert timed == ["phase network", "phase container", "phase master", "begin instances ready",
                     "end instances ready"]


def test_a_one_node_container_keeps_its_log_as_container_log(world):
    with make(world, ONE_NODE) as d:
        bring_up(d)
    assert [p.name for p in (world.run_dir / "logs").iterdir()] == ["container.log"]
    assert "remove network" not in " ".join(world.calls)  # cpu-local has no network


def test_attach_stops_only_what_it_started_and_never_removes_the_container(world):
    with make(world, attach=True) as d:
        bring_up(d)
        world.calls.clear()
    assert did(world.calls) == ["stop instance-1, instance-2", "stop mooncake-master"]
    assert "say container kvpool-cpu-local-node1 removed" not in world.calls


def test_attach_makes_no_network_and_claims_no_name(world):
    with make(world, attach=True) as d:
        bring_up(d)
    assert not [c for c in world.calls if "network" in c or c.startswith("claim")]


def test_keep_leaves_everything_running(world):
    with make(world, keep=True) as d:
        bring_up(d)
        world.calls.clear()
    assert did(world.calls) == []
    assert world.calls[1:-1] == ["say --keep-deployment: container kvpool-cpu-local-node2 left running",
                                 "say --keep-deployment: container kvpool-cpu-local-node1 left running"]


def test_the_teardown_says_when_it_begins_and_when_it_has_ended(world):
    with make(world) as d:
        bring_up(d)
        world.calls.clear()
    assert world.calls[0] == "say teardown: starting" and re.fullmatch(r"say teardown: \d+\.\d s", world.calls[-1])
    assert did(world.calls) == ALL_OWNED  # between the two


def test_a_teardown_that_fails_does_not_say_it_ended(world, monkeypatch):
    def remove_network(client, name):
        raise RuntimeError("the daemon went away")

    monkeypatch.setattr(deployment, "remove_network", remove_network)
    d = make(world)
    d.create_network()
    world.calls.clear()
    with pytest.raises(RuntimeError, match="the daemon went away"):
        d.close()
    assert world.calls == ["say teardown: starting"]


def test_keep_under_attach_stops_nothing_either(world):
    with make(world, attach=True, keep=True) as d:
        bring_up(d)
        world.calls.clear()
    assert did(world.calls) == []


def test_replace_is_passed_to_the_names_claims(world):
    with make(world, replace=True) as d:
        d.claim_names()
    assert did(world.calls) == ["claim kvpool-cpu-local-node1 (replace)", "claim kvpool-cpu-local-node2 (replace)"]


# What close() undoes after a failure at each step, for an owned deployment and an attached one: the failed step's
# own part at once (node1's container when node2's fails), the earlier steps' on close(), in reverse.
OWNED_UNDO = {
    "network": [],
    "container node2": ["remove if ours kvpool-cpu-local-node2", *ALL_OWNED[1:]],
    "config": ALL_OWNED,
    "master": ALL_OWNED,
    "launch": ALL_OWNED,
    "ready": ALL_OWNED,
}
ATTACHED_UNDO = {  # attached: no network step
    "container node2": [],
    "config": [],
    "master": [],
    "launch": ["stop mooncake-master"],
    "ready": ["stop instance-1, instance-2", "stop mooncake-master"],
}


@pytest.mark.parametrize("exc", [DeploymentError("it broke"), KeyboardInterrupt()], ids=["failure", "ctrl-c"])
@pytest.mark.parametrize("attach, step", [(False, s) for s in STEPS] + [(True, s) for s in STEPS[1:]],
                         ids=[f"owned-{s}" for s in STEPS] + [f"attached-{s}" for s in STEPS[1:]])
def test_a_failure_or_ctrl_c_at_each_step_undoes_everything_before_it_in_reverse(world, step, exc, attach):
    world.fail[step] = exc
    with pytest.raises(type(exc)):
        with make(world, attach=attach) as d:
            bring_up(d)
    after = did(world.calls)[did(world.calls).index(f"fail {step}") + 1:]
    assert after == (ATTACHED_UNDO if attach else OWNED_UNDO)[step]


def test_a_failed_container_step_removes_the_started_node_at_once_not_on_close(world):
    world.fail["container node2"] = DeploymentError("no such device")
    d = make(world)
    d.create_network()
    with pytest.raises(DeploymentError):
        d.start_containers("an-image")
    assert did(world.calls)[-2:] == ["remove if ours kvpool-cpu-local-node2", "remove kvpool-cpu-local-node1"]
    assert d.containers.keys() == {"node1"}  # what was started, as it was
    world.calls.clear()
    d.close()
    assert did(world.calls) == ["remove network kvpool-2node"]  # node1 is not removed twice


def test_the_early_launch_returns_before_ready_and_ready_waits_for_the_same_instances(world):
    d = make(world)
    d.create_network()
    d.start_containers("an-image")
    d.start_master()
    launched = d.launch()
    assert did(world.calls)[-1] == "launch instance-1, instance-2" and "begin instances ready" in world.calls
    assert "end instances ready" not in world.calls  # the stages 1-3 run meanwhile
    assert d.wait_ready() is launched and d.instances is launched
    assert world.calls[-2:] == ["ready 2 watching mooncake-master", "end instances ready"]
    d.close()


def test_ready_ends_its_phase_when_it_fails(world):
    world.fail["ready"] = DeploymentError("instance-2 exited before it became healthy")
    with make(world) as d:
        bring_up_to_launch = [d.create_network, d.start_containers, d.start_master, d.launch]
        for step in bring_up_to_launch:
            step("an-image") if step == d.start_containers else step()
        with pytest.raises(DeploymentError):
            d.wait_ready()
        assert world.calls[-1] == "end instances ready"


def test_a_restarted_master_is_the_one_close_stops_under_attach(world):
    with make(world, attach=True) as d:
        bring_up(d)
        d.restart_master()
        assert d.master.name == "mooncake-master-restart1"
        world.calls.clear()
    assert did(world.calls) == ["stop instance-1, instance-2", "stop mooncake-master-restart1"]


def test_a_restarted_instance_takes_the_old_ones_place_in_what_close_stops(world, monkeypatch):
    monkeypatch.setattr(serving, "start_instance", lambda container, target, spec, log_name: serving.RunningInstance(
        spec, Proc(log_name, world.calls), 1.0))
    with make(world, attach=True) as d:
        bring_up(d)
        d.restart_instance(d.instances[0])
        world.calls.clear()
    assert did(world.calls) == ["stop instance-1-restart1, instance-2", "stop mooncake-master"]


def test_the_resilience_stage_restarts_the_deployments_own_master_and_instances(world, monkeypatch):
    from harness.resilience import Live

    monkeypatch.setattr(serving, "start_instance", lambda container, target, spec, log_name: serving.RunningInstance(
        spec, Proc(log_name, world.calls), 1.0))
    with make(world, attach=True) as d:
        bring_up(d)
        live = Live(d)
        live.restart_master()
        live.restart(live.instance("first"))
        assert (live.master, live.instances, live.target) == (d.master, d.instances, d.target)
        assert (d.master.name, d.instances[0].process.name) == ("mooncake-master-restart1", "instance-1-restart2")
        world.calls.clear()
    assert did(world.calls) == ["stop instance-1-restart2, instance-2", "stop mooncake-master-restart1"]
