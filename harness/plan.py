"""What the deployment runs, described as data before anything runs: each node's container (its `docker run`), the
mooncake.json written into it, and the master's and each instance's process (argv, environment, setup scripts,
working folder), with the suite's network and the NPU emulator's files where the target has them.
harness/runtime.py, mooncake.py, serving.py and fixtures/deployment.py execute these descriptions, so there is one copy
of each command: a plan printed from them (commands/plan_render.py, `pytest --plan`), or compared with the guide a
target follows (harness/departures.py), is what runs. No Docker here."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.config import Instance, Node, Target, resolve_repo_path, serve_argv
from harness.emulator import STATE_PATH, render_hccn_conf, render_state
from harness.owner import LABEL, Owner

MASTER = "mooncake-master"  # the master's process and log name


@dataclass(frozen=True)
class Mount:
    host: str  # as docker receives it: a relative path of the target is resolved against the repository
    container: str
    mode: str  # "rw" or "ro"


@dataclass(frozen=True)
class ContainerRun:
    """One node's container, as the docker SDK is asked to run it (detached)."""

    node: str
    name: str
    image: str
    command: list[str]
    shm_size: str
    devices: list[str]  # docker's host:container:permissions form
    volumes: list[Mount]
    env: dict[str, str]
    init: bool
    workdir: str | None
    labels: dict[str, str]
    network_mode: str | None = None  # "host", ...; None on the suite's own network
    network: str | None = None  # the suite's network (cpu-local-2node), joined at ipv4_address as hostname
    hostname: str | None = None
    ipv4_address: str | None = None


@dataclass(frozen=True)
class NetworkCreate:
    """The suite's own network between the nodes' containers (cpu-local-2node), as the docker SDK creates it."""

    name: str
    subnet: str
    internal: bool
    driver: str
    labels: dict[str, str]


@dataclass(frozen=True)
class FileWrite:
    """A file the suite writes into a node's container; text None: the file is removed instead."""

    node: str
    container: str
    path: str
    text: str | None


@dataclass(frozen=True)
class ProcessRun:
    """A process the suite starts in a node's container: the setup scripts are sourced first, then `$NAME` in an
    env value expands from the environment they leave (harness/runtime.py's launcher), then argv runs."""

    name: str
    node: str
    container: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    workdir: str | None = None  # None: the container's


@dataclass(frozen=True)
class Plan:
    containers: list[ContainerRun]
    files: list[FileWrite]
    master: ProcessRun
    instances: list[ProcessRun]
    network: NetworkCreate | None = None  # created before the containers, removed after them
    emulator_files: list[FileWrite] = field(default_factory=list)  # written right after each node's container starts


def docker_cli(node: Node) -> list[str]:
    """The docker CLI's flags that reach the node's daemon (`-H`, TLS); none for the local one."""
    if node.docker == "local":
        return []
    flags = ["-H", node.docker]
    if node.tls is not None:
        flags += ["--tlsverify", "--tlscacert", str(resolve_repo_path(node.tls.ca_cert)),
                  "--tlscert", str(resolve_repo_path(node.tls.client_cert)),
                  "--tlskey", str(resolve_repo_path(node.tls.client_key))]
    return flags


def devices(target: Target) -> list[str]:
    """`--device` values in docker's host:container:permissions form."""
    out = []
    for d in target.container.devices:
        parts = d.split(":")
        host, inside = parts[0], parts[1] if len(parts) > 1 else parts[0]
        out.append(f"{host}:{inside}:{parts[2] if len(parts) > 2 else 'rwm'}")
    return out


def describe_container(target: Target, image: str, node: Node | None = None,
                       owner: Owner | None = None) -> ContainerRun:
    """The node's container as the target says, labelled with its owner (none: only the target's and node's
    labels, for a plan printed outside a run)."""
    c = target.container
    node = node or target.node_list()[0]
    labels = {**(owner.labels("deployment") if owner else {}), f"{LABEL}.target": target.name,
              f"{LABEL}.node": node.name}
    if target.network is not None:  # the node's own address on the suite's network
        net = {"network": target.network.name, "hostname": node.name, "ipv4_address": node.address}
    else:
        net = {"network_mode": c.network_mode}
    return ContainerRun(
        node=node.name, name=target.container_name(node), image=image, command=list(c.command), shm_size=c.shm_size,
        devices=devices(target), volumes=[Mount(str(v.host_path()), v.container, v.mode) for v in c.volumes],
        env=dict(c.env), init=c.init, workdir=c.workdir, labels=labels, **net)


def describe_network(target: Target, owner: Owner | None = None) -> NetworkCreate | None:
    """The nodes' network the target asks for (internal, on its subnet), labelled with its owner; None: no network."""
    net = target.network
    if net is None:
        return None
    return NetworkCreate(net.name, net.subnet, net.internal, "bridge",
                         {**(owner.labels("network") if owner else {}), f"{LABEL}.target": target.name})


def describe_emulator_files(target: Target, node: Node | None = None) -> list[FileWrite]:
    """The NPU emulator's state and hccn.conf from the node's `npu.emulator` (cpu-local), or none for real NPUs;
    a hccn.conf the YAML says is absent is removed."""
    node = node or target.node_list()[0]
    npu, name = target.npu_of(node), target.container_name(node)
    if npu.emulator is None:
        return []
    return [FileWrite(node.name, name, STATE_PATH, render_state(npu.emulator)),
            FileWrite(node.name, name, npu.hccn_conf, render_hccn_conf(npu.emulator))]


def describe_mooncake_json(target: Target, node: Node | None = None) -> FileWrite:
    """The node's mooncake.json (the target's, with the node's own fields), where MOONCAKE_CONFIG_PATH points."""
    node = node or target.node_list()[0]
    return FileWrite(node.name, target.container_name(node), target.mooncake.config_path,
                     target.mooncake_json(node).render())


def describe_master(target: Target, name: str = MASTER) -> ProcessRun:
    node = target.master_node()
    return ProcessRun(name, node.name, target.container_name(node), list(target.mooncake.master.command))


def instance_env(target: Target, x: Instance) -> dict[str, str]:
    """The instance's environment: its own, plus the visible devices the suite sets from the target."""
    return {target.npu_of(target.node_of(x)).visible_devices_env: ",".join(map(str, x.visible_devices)), **x.env}


def describe_instance(target: Target, x: Instance, name: str | None = None) -> ProcessRun:
    """One instance's `vllm serve` with its environment; `name`: its process and log name when not the instance's."""
    node = target.node_of(x)
    return ProcessRun(name or x.name, node.name, target.container_name(node), serve_argv(target, x),
                      instance_env(target, x), list(x.setup), target.container.workdir)


def describe(target: Target, image: str, owner: Owner | None = None) -> Plan:
    """Everything the deployment runs, in the order it starts: the network, containers (each with its emulator files),
    mooncake.json files, master, instances."""
    nodes = target.node_list()
    return Plan([describe_container(target, image, n, owner) for n in nodes],
                [describe_mooncake_json(target, n) for n in nodes], describe_master(target),
                [describe_instance(target, x) for x in target.instances], describe_network(target, owner),
                [f for n in nodes for f in describe_emulator_files(target, n)])
