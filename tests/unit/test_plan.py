"""The deployment described before it runs (harness/plan.py), and the executing code running exactly that: the docker
SDK gets the described container, the master's and the instances' processes their described argv, environment, setup
scripts and folder, and mooncake.json the described text. Stand-in Docker client, container and Process: no Docker."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from docker.errors import NotFound

from harness import mooncake, runtime, serving
from harness.config import load_target, serve_argv
from harness.owner import LABEL, Owner
from harness.plan import MASTER, describe, describe_container, describe_instance

ATLAS = load_target("atlas-800t-a2")
OWNER = Owner("run-1", "2026-01-01T00:00:00+00:00", "someone", "a-host", 42, False)


def test_the_plan_of_the_seeds_deployment():
    plan = describe(ATLAS, "an-image", OWNER)
    [c] = plan.containers
    assert (c.node, c.name, c.image, c.command, c.network_mode, c.network) == (
        "node1", "vllm-ascend", "an-image", ["sleep", "infinity"], "host", None)
    assert c.devices[0] == "/dev/davinci0:/dev/davinci0:rwm" and len(c.devices) == 11
    assert (c.volumes[7].host, c.volumes[7].container, c.volumes[7].mode) == ("/mnt/sfs_turbo/.cache", "/root/.cache",
                                                                              "rw")
    assert c.labels == {**OWNER.labels("deployment"), f"{LABEL}.target": "atlas-800t-a2", f"{LABEL}.node": "node1"}
    [f] = plan.files
    assert (f.path, json.loads(f.text)) == ("/vllm-workspace/mooncake.json", json.loads(ATLAS.mooncake.config.render()))
    assert (plan.master.name, plan.master.argv, plan.master.env, plan.master.setup, plan.master.workdir) == (
        MASTER, ATLAS.mooncake.master.command, {}, [], None)
    one, two = plan.instances
    assert one.argv == serve_argv(ATLAS, ATLAS.instances[0]) and one.workdir == "/vllm-workspace"
    assert one.env == {"ASCEND_RT_VISIBLE_DEVICES": "0,1,2,3", **ATLAS.instances[0].env}
    assert two.env["ASCEND_RT_VISIBLE_DEVICES"] == "4,5,6,7"
    assert one.setup == ["/usr/local/Ascend/ascend-toolkit/set_env.sh", "/usr/local/Ascend/nnal/atb/set_env.sh"]


def test_the_plan_of_two_nodes():
    t = load_target("cpu-local-2node")
    plan = describe(t, "an-image")
    assert [(c.node, c.network, c.hostname, c.ipv4_address, c.network_mode) for c in plan.containers] == [
        (n.name, "kvpool-2node", n.name, n.address, None) for n in t.node_list()]
    assert [c.labels[f"{LABEL}.node"] for c in plan.containers] == ["node1", "node2"]  # no owner: the target's only
    assert [f.node for f in plan.files] == ["node1", "node2"]
    assert [(x.name, x.node) for x in plan.instances] == [(x.name, t.node_of(x).name) for x in t.instances]


class _Handle:
    status = "running"

    def __init__(self, name):
        self.name = name

    def reload(self):
        pass


class _Containers:
    def __init__(self):
        self.runs = []

    def get(self, name):
        raise NotFound(f"no container {name}")

    def run(self, image, command, **kwargs):
        self.runs.append((image, command, kwargs))
        return _Handle(kwargs["name"])


@pytest.mark.parametrize("name", ["atlas-800t-a2", "cpu-local-2node"])
def test_start_container_runs_the_described_container(monkeypatch, name):
    monkeypatch.setattr(runtime, "Path", lambda p: SimpleNamespace(exists=lambda: True))  # every volume's host folder
    t = load_target(name)
    node = t.node_list()[-1]
    client = SimpleNamespace(containers=_Containers(), api=SimpleNamespace(_version="1.43"))
    runtime.start_container(client, t, "an-image", OWNER, node)
    [(image, command, kwargs)] = client.containers.runs
    run = describe_container(t, "an-image", node, OWNER)
    c = t.container
    # What start_container passed before the plan existed, from the target directly:
    assert (image, command) == ("an-image", c.command) == (run.image, run.command)
    net = kwargs.pop("networking_config", None)
    assert kwargs == {
        "name": t.container_name(node), "detach": True, "shm_size": c.shm_size, "devices": run.devices,
        "init": c.init, "working_dir": c.workdir, "environment": c.env,
        "volumes": {str(v.host_path()): {"bind": v.container, "mode": v.mode} for v in c.volumes},
        "labels": {**OWNER.labels("deployment"), f"{LABEL}.target": t.name, f"{LABEL}.node": node.name},
        **({"network": t.network.name, "hostname": node.name} if t.network else {"network_mode": c.network_mode})}
    if t.network:
        assert net[t.network.name]["IPAMConfig"]["IPv4Address"] == node.address
    else:
        assert net is None


def test_volume_folders_are_checked_on_this_host_only_for_its_own_daemon(monkeypatch):
    # No volume folder exists here: node1 (the local daemon) is refused before docker runs; node2 (ssh://) is not
    # judged by this host's folders, which are not its host's.
    monkeypatch.setattr(runtime, "Path", lambda p: SimpleNamespace(exists=lambda: False))
    t = load_target("atlas-800t-a2-2node")
    node1, node2 = t.node_list()
    client = SimpleNamespace(containers=_Containers(), api=SimpleNamespace(_version="1.43"))
    with pytest.raises(runtime.DeploymentError, match=r"container.volumes\[0\].host .* does not exist on this host"):
        runtime.start_container(client, t, "an-image", OWNER, node1)
    assert client.containers.runs == []
    runtime.start_container(client, t, "an-image", OWNER, node2)
    assert [kwargs["name"] for _, _, kwargs in client.containers.runs] == [t.container_name(node2)]


class _Started(Exception):
    pass


def test_master_and_instances_start_as_described(monkeypatch):
    started = []

    class Recorder:
        @classmethod
        def start(cls, container, name, argv, env=None, setup=None, workdir=None, stop_timeout=20):
            started.append((name, argv, env, setup, workdir))
            raise _Started

    monkeypatch.setattr(mooncake, "Process", Recorder)
    monkeypatch.setattr(serving, "Process", Recorder)
    monkeypatch.setattr(mooncake, "port_accepts", lambda *a, **k: False)
    monkeypatch.setattr(serving, "port_accepts", lambda *a, **k: False)
    with pytest.raises(_Started):
        mooncake.start_master(object(), ATLAS, name="mooncake-master-restart1")
    x = ATLAS.instances[1]
    with pytest.raises(_Started):
        serving.start_instance(object(), ATLAS, x, log_name="instance-2-restart1")
    run = describe_instance(ATLAS, x, "instance-2-restart1")
    assert started == [("mooncake-master-restart1", ATLAS.mooncake.master.command, {}, [], None),
                       ("instance-2-restart1", serve_argv(ATLAS, x), run.env, x.setup, ATLAS.container.workdir)]


def test_write_config_writes_the_described_file():
    written = {}
    box = SimpleNamespace(put_file=lambda path, text: written.update({path: text}))
    t = load_target("cpu-local-2node")
    node = t.node_list()[1]
    assert mooncake.write_config(box, t, node) == written[t.mooncake.config_path] == t.mooncake_json(node).render()
