"""The deployment as one object: network, containers, mooncake.json, master and instances, brought up by explicit
steps in that order, each step's undo on one ExitStack, undone in reverse by close() on every way out.

    with Deployment(target, owner, clients, run_dir, Policy(attach=..., keep=..., replace=...)) as d:
        d.create_network(); d.claim_names(); d.start_containers(image); d.write_config()
        d.start_master(); d.launch(); d.wait_ready()

What each step runs (the docker run, the files, the master's and instances' argv and environment) is described by
harness/plan.py before it runs; the steps execute those descriptions through harness/runtime.py, mooncake.py and
serving.py. A step that fails undoes its own part at once and leaves the earlier steps' for close(). The policy is
decided once, here: what this run owns it removes or stops, what it attached to it never removes, and with `keep`
it leaves everything running. An owned container's removal ends the master and instances in it, so they are only
stopped one by one in an attached container.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import docker

from harness import mooncake, serving
from harness.config import Target
from harness.owner import REPLACE, Owner
from harness.plan import describe_emulator_files
from harness.progress import logger
from harness.runtime import (
    RUN_DIR,
    Container,
    Process,
    attach_container,
    claim_container,
    create_network,
    remove_if_ours,
    remove_network,
    start_container,
)

log = logger("deployment")


@dataclass(frozen=True)
class Policy:
    """Who owns what, decided once for the whole run."""

    attach: bool = False   # --attach: run in the user's running containers, stop only what this run started there
    keep: bool = False     # --keep-deployment: leave everything running
    replace: bool = False  # --replace-deployment: another run's containers and network may be removed


class _NoPhases:
    """Stands in for the session's Phases when a caller times nothing."""

    def phase(self, name: str, measured: bool = False):
        return nullcontext()

    def begin(self, name: str, measured: bool = False) -> None:
        pass

    def end(self, name: str) -> None:
        pass


INSTANCES_READY = "instances ready"


class Deployment:
    """One run's deployment and the owner of everything it starts (see the module's docstring)."""

    def __init__(self, target: Target, owner: Owner, clients: Mapping[str, docker.DockerClient], run_dir: Path,
                 policy: Policy = Policy(), phases=None):
        self.target, self.owner, self.clients, self.run_dir = target, owner, clients, run_dir
        self.policy, self.phases = policy, phases or _NoPhases()
        # The policy, decided once: what this run makes and what it undoes.
        self.makes_network = target.network is not None and not policy.attach
        self.removes = not policy.keep  # the network and the containers this run made
        # In an owned container the container's removal ends its processes (stopping them first cost ~2 s a run).
        self.stops_processes = policy.attach and not policy.keep
        self.containers: dict[str, Container] = {}
        self.master: Process | None = None
        self.instances: list[serving.RunningInstance] = []
        self.restarts = 0
        self._undo = ExitStack()

    # -- every way out ------------------------------------------------------------------------------------------

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Undo every step taken, in reverse: instances, master, containers (their logs saved first), network."""
        start = time.monotonic()
        log.info("teardown: starting", extra={"phase": "teardown", "at": "begin"})
        self._undo.close()
        took = time.monotonic() - start  # not logged when an undo failed: its error is what the run reports
        log.info(f"teardown: {took:.1f} s", extra={"phase": "teardown", "at": "end", "seconds": round(took, 1)})

    @contextmanager
    def _step(self) -> Iterator[ExitStack]:
        """A step's own undos: run at once if the step fails or is interrupted, else handed to close()."""
        with ExitStack() as step:
            yield step
            self._undo.push(step.pop_all())

    def _replaced(self, what: str, name: str, decision: str | None) -> None:
        if decision == REPLACE:
            log.info(f"--replace-deployment: another run's {what} {name} removed")

    @property
    def container(self) -> Container:
        """The master's node's container (the only one of a one-node target)."""
        return self.containers[self.target.master_node().name]

    # -- the steps, in order ------------------------------------------------------------------------------------

    def create_network(self) -> None:
        """The network between the nodes' containers (a target with `network`), unless attached."""
        if not self.makes_network:
            return
        net, client = self.target.network, self.clients[self.target.master_node().name]
        with self._step() as undo, self.phases.phase("network"):
            self._replaced("network", net.name, create_network(client, self.target, self.owner,
                                                               self.policy.replace))
            log.info(f"network {net.name} ({net.subnet}, internal) created",
                     extra={"phase": "network created", "network": net.name})
            if self.removes:
                undo.callback(self._remove_network, client, net.name)

    def _remove_network(self, client, name: str) -> None:
        remove_network(client, name)
        log.info(f"network {name} removed", extra={"phase": "network removed", "network": name})

    def claim_names(self) -> None:
        """Each node's container name is free, or this run may free it, before an image is built or anything runs."""
        if self.policy.attach:
            return
        for node in self.target.node_list():
            name = self.target.container_name(node)
            self._replaced("container", name, claim_container(self.clients[node.name], name, self.owner,
                                                              self.policy.replace))

    def start_containers(self, image: str | None) -> dict[str, Container]:
        """Each node's container in the nodes' order (attached under --attach), with the emulator's files."""
        with self._step() as undo, self.phases.phase("container"):
            for node in self.target.node_list():
                c = self._start_node(node, image)
                self.containers[node.name] = c
                # One log per node: on two Atlas servers both containers may have one name (vllm-ascend).
                undo.callback(self._finish_container, c,
                              f"container-{node.name}" if self.target.multi_node else "container")
        return self.containers

    def _start_node(self, node, image: str | None) -> Container:
        attach, client, name = self.policy.attach, self.clients[node.name], self.target.container_name(node)
        try:
            c = attach_container(client, name) if attach else start_container(client, self.target, image,
                                                                               self.owner, node)
            where = f" on node {node.name}" if self.target.multi_node else ""
            log.info(f"container {c.name} {'attached' if attach else 'started'}{where}",
                     extra={"phase": "container attached" if attach else "container started", "container": c.name,
                            "node": node.name})
            for f in describe_emulator_files(self.target, node):  # the emulated server's NPU state, hccn.conf
                c.put_file(f.path, f.text) if f.text is not None else c.remove_file(f.path)
            return c
        except BaseException:  # a failure or Ctrl-C/SIGTERM before its undo is registered
            if not attach:
                remove_if_ours(client, name, self.owner)
            raise

    def _finish_container(self, c: Container, log_name: str) -> None:
        save_logs(c, self.run_dir, log_name)
        if c.owned and self.removes:
            c.remove()
            log.info(f"container {c.name} removed", extra={"phase": "container removed", "container": c.name})
        elif self.policy.keep:
            log.info(f"--keep-deployment: container {c.name} left running",
                     extra={"phase": "container kept", "container": c.name})

    def write_config(self) -> dict[str, str]:
        """Each node's mooncake.json, in its container and under the run's folder; the texts by node name."""
        texts = {}
        for node in self.target.node_list():
            texts[node.name] = mooncake.write_config(self.containers[node.name], self.target, node)
            (self.run_dir / mooncake_json_name(self.target, node.name)).write_text(texts[node.name])
        return texts

    def start_master(self) -> Process:
        with self._step() as undo, self.phases.phase("master"):
            self.master = mooncake.start_master(self.container, self.target)
            if self.stops_processes:
                undo.callback(self._stop_master)
        return self.master

    def _stop_master(self) -> None:
        self.master.stop()  # the current one: a restarted master took the first one's place

    def launch(self) -> list[serving.RunningInstance]:
        """Start the instances without waiting for them (the early launch: they load while stages 1-3 run)."""
        with self._step() as undo:
            mooncake.require_alive(self.master)  # the pool must still be there when the instances join it
            self.phases.begin(INSTANCES_READY, measured=True)
            self.instances = serving.start_instances(self.containers, self.target)
            if self.stops_processes:
                undo.callback(serving.stop_all, self.instances)
            log.info("started " + ", ".join(f"{i.name} (pid {i.process.pid})" for i in self.instances)
                     + "; waiting for /health", extra={"phase": "instances launched"})
        return self.instances

    def wait_ready(self) -> list[serving.RunningInstance]:
        """Wait until every launched instance serves, failing at once if one or the master dies meanwhile."""
        try:
            mooncake.require_alive(self.master)  # launched early: the master may have died since
            serving.wait_ready(self.instances, watch=[self.master])
        finally:
            self.phases.end(INSTANCES_READY)
        return self.instances

    # -- what the resilience stage does to it -------------------------------------------------------------------

    def restart_master(self) -> float:
        """Stop the master (SIGTERM, then SIGKILL) and start a new one with the same command in its place, owned as
        the first was; seconds it took."""
        start = time.monotonic()
        self.master.stop()
        self.restarts += 1
        self.master = mooncake.start_master(self.container, self.target,
                                            name=f"mooncake-master-restart{self.restarts}")
        return time.monotonic() - start

    def restart_instance(self, inst: serving.RunningInstance) -> serving.RunningInstance:
        """Launch a dead instance again in place (same spec, its own new log), owned as the first was."""
        if inst.process.alive():
            raise RuntimeError(f"{inst.name} is still running (pid {inst.process.pid}); kill it first")
        self.restarts += 1
        new = serving.start_instance(inst.process.container, self.target, inst.spec,  # in its own node's container
                                     log_name=f"{inst.name}-restart{self.restarts}")
        inst.process, inst.started_at = new.process, new.started_at
        log.info(f"{inst.name} launched again (pid {inst.process.pid})")
        return inst

    # -- what the pool-cost stage does to it ----------------------------------------------------------------------

    def relaunch(self, target: Target, suffix: str) -> list[serving.RunningInstance]:
        """Stop the instances and launch `target`'s in their place (the pool-cost stage's second bring-up: the same
        instances without the pool), each with its own log (`<name>-<suffix>`); the master stays. Not yet ready: wait
        with wait_ready()."""
        serving.stop_all(self.instances)
        self.phases.begin(INSTANCES_READY, measured=True)
        started: list[serving.RunningInstance] = []
        try:
            for x in target.instances:
                started.append(serving.start_instance(self.containers[target.node_of(x).name], target, x,
                                                      log_name=f"{x.name}-{suffix}"))
        except BaseException:  # all or none, as launch()
            serving.stop_all(started)
            raise
        # In place: the list launch() left for close() to stop (by the policy) now holds the new instances.
        self.instances[:] = started
        log.info("started " + ", ".join(f"{i.process.name} (pid {i.process.pid})" for i in started)
                 + "; waiting for /health")
        return self.instances


def mooncake_json_name(target: Target, node: str) -> str:
    """The name a node's mooncake.json is kept under in the run's folder and the report."""
    return f"mooncake-{node}.json" if target.multi_node else "mooncake.json"


def save_logs(container: Container, run_dir: Path, name: str = "container") -> None:
    """Keep the container's output (logs/<name>.log) and every process log of the run under reports/."""
    (run_dir / "logs" / f"{name}.log").write_text(container.logs())
    try:
        stream, _ = container.handle.get_archive(RUN_DIR)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith(".log"):
                    data = tar.extractfile(member)
                    if data:
                        (run_dir / "logs" / Path(member.name).name).write_bytes(data.read())
    except docker.errors.NotFound:
        pass  # nothing was started in it
