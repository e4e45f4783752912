"""Where the deployment runs: the container (docker SDK) and the background processes exec'd into it.

Everything passed to the container is data: argv lists, environment dicts, file contents. Nothing the
target says is pasted into a shell string, so `;`, `$()` or quotes in a value stay characters.
"""

from __future__ import annotations

import io
import json
import shlex
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NoReturn

import docker
from docker.errors import APIError, ImageNotFound, NotFound

from harness.config import Node, Target, resolve_repo_path
from harness.owner import FOREIGN, LABEL, REFUSE, Owner, decide, refusal
from harness.plan import describe_container, describe_network
from harness.progress import logger
from harness.waiting import wait_until

RUN_DIR = "/tmp/kvpool"  # inside the container: process logs and pid files
STOP_TIMEOUT_S = 20  # a background process's grace between SIGTERM and SIGKILL, unless its starter says otherwise
log = logger("deployment")  # a process stopped or killed: [deployment] lines

# Starts a background process: records its pid, sends its output to a log, sources the target's setup
# scripts, then hands over to EXPAND. Arguments: log, pidfile, number of setup scripts, scripts, argv.
LAUNCHER = r"""
log=$1 pidfile=$2 n=$3; shift 3
echo $$ > "$pidfile"
exec >"$log" 2>&1
while [ "$n" -gt 0 ]; do
  . "$1" || { echo "kvpool: sourcing $1 failed"; exit 97; }
  shift; n=$((n - 1))
done
exec python3 -c "$KVPOOL_EXPAND" "$@"
"""

# Sets the target's environment now that the setup scripts ran: `$NAME` and `${NAME}` in a value expand
# from the current environment (the seed's `export LD_LIBRARY_PATH=...:$LD_LIBRARY_PATH`); nothing else
# is interpreted. Then becomes the process (same pid) in its own process group, so stop() reaches its
# children too.
EXPAND = r"""
import json, os, re, sys
for key, value in json.loads(os.environ.pop("KVPOOL_ENV")).items():
    os.environ[key] = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: os.environ.get(m.group(1) or m.group(2), ""), value)
os.environ.pop("KVPOOL_EXPAND", None)
try:
    os.setpgid(0, 0)
except OSError:
    pass
os.execvp(sys.argv[1], sys.argv[1:])
"""


def log_path(name: str) -> str:
    """Where a background process's output goes, inside its container."""
    return f"{RUN_DIR}/{name}.log"


def pid_path(name: str) -> str:
    return f"{RUN_DIR}/{name}.pid"


def launch(name: str, argv: list[str], env: dict[str, str] | None = None,
           setup: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The `docker exec` (detached) that starts a background process through LAUNCHER: its argv and environment."""
    setup = setup or []
    return (["bash", "-c", LAUNCHER, "launcher", log_path(name), pid_path(name), str(len(setup)), *setup, *argv],
            {"KVPOOL_ENV": json.dumps(env or {}), "KVPOOL_EXPAND": EXPAND})


def signal_group(signal: str, pid: int | str) -> list[str]:
    """`kill` of a process's whole group (it runs in its own, see EXPAND)."""
    return ["kill", f"-{signal}", "--", f"-{pid}"]


# Stage 2 reads the size of /dev/shm inside the container with this.
SHM_SIZE_ARGV = ["df", "-B1", "--output=size", "/dev/shm"]


class DeploymentError(RuntimeError):
    """The deployment could not be brought up or used; the message says what to look at."""


class AnotherRunsDeployment(DeploymentError):
    """The target's container or network name is held by another run of the suite: left alone, the run stops."""


@dataclass(frozen=True)
class ExecResult:
    rc: int
    output: str


class Container:
    """The deployment's container; `owned` is False when the suite attached to one it did not start."""

    def __init__(self, handle, owned: bool):
        self.handle = handle
        self.owned = owned
        self.name: str = handle.name

    def exec(self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 60,
             workdir: str | None = None) -> ExecResult:
        # coreutils `timeout` bounds every call: a hung tool must not hang the suite.
        rc, out = self.handle.exec_run(["timeout", str(int(timeout)), *argv], environment=env, workdir=workdir,
                                       demux=False)
        return ExecResult(rc, (out or b"").decode(errors="replace"))

    def put_file(self, path: str, text: str, mode: int = 0o644) -> None:
        p = PurePosixPath(path)
        self.exec(["mkdir", "-p", str(p.parent)])
        data, raw = io.BytesIO(), text.encode()
        with tarfile.open(fileobj=data, mode="w") as tar:
            info = tarfile.TarInfo(p.name)
            info.size, info.mode, info.mtime = len(raw), mode, int(time.time())
            tar.addfile(info, io.BytesIO(raw))
        if not self.handle.put_archive(str(p.parent), data.getvalue()):
            raise DeploymentError(f"could not write {path} into container {self.name}")

    def remove_file(self, path: str) -> None:
        self.exec(["rm", "-f", path])

    def read_file(self, path: str) -> str | None:
        r = self.exec(["cat", path])
        return r.output if r.rc == 0 else None

    def copy_out(self, path: str, dest: Path) -> Path:
        """One regular file of the container into the folder dest (bytes as they are), through the docker API."""
        stream, stat = self.handle.get_archive(path)
        if stat.get("mode", 0) & (1 << 31):  # Go's os.ModeDir: refuse before the stream (a model folder) is read
            raise DeploymentError(f"{path} in container {self.name} is not a regular file")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.getmembers()[0]
            if not member.isfile():
                raise DeploymentError(f"{path} in container {self.name} is not a regular file")
            dest.mkdir(parents=True, exist_ok=True)
            (dest / PurePosixPath(path).name).write_bytes(tar.extractfile(member).read())
        return dest / PurePosixPath(path).name

    def network_bytes(self) -> tuple[int, int]:
        """(received, sent) bytes over every interface but loopback, from the container's /proc/net/dev: what crossed
        its network namespace (on host networking, the host's)."""
        text = self.read_file("/proc/net/dev") or ""
        rx = tx = 0
        for line in text.splitlines()[2:]:
            name, _, fields = line.partition(":")
            values = fields.split()
            if name.strip() != "lo" and len(values) >= 9:
                rx, tx = rx + int(values[0]), tx + int(values[8])
        return rx, tx

    def is_running(self) -> bool:
        try:
            self.handle.reload()
        except NotFound:
            return False
        return self.handle.status == "running"

    def logs(self) -> str:
        try:
            return self.handle.logs().decode(errors="replace")
        except NotFound:
            return ""

    def remove(self) -> None:
        try:
            self.handle.remove(force=True)
        except NotFound:
            pass


def docker_for(node: Node, multi_node: bool = False) -> docker.DockerClient:
    """A client of the node's Docker daemon (the local one, ssh:// or tcp:// with TLS); a daemon that does not
    answer raises DeploymentError naming the node, before anything is started on any node."""
    where = "DOCKER_HOST or the local socket" if node.docker == "local" else node.docker
    try:
        if node.docker == "local":
            client = docker.from_env(timeout=120)
        else:
            tls = None
            if node.tls is not None:
                tls = docker.tls.TLSConfig(client_cert=(str(resolve_repo_path(node.tls.client_cert)),
                                                        str(resolve_repo_path(node.tls.client_key))),
                                           ca_cert=str(resolve_repo_path(node.tls.ca_cert)), verify=True)
            client = docker.DockerClient(base_url=node.docker, tls=tls, timeout=120,
                                         use_ssh_client=node.docker.startswith("ssh://"))
        client.ping()
    except Exception as e:  # noqa: BLE001 - every failure here means "no daemon"
        if not multi_node and node.docker == "local":
            raise DeploymentError(f"no Docker daemon answers ({e}); run scripts/setup") from None
        raise DeploymentError(f"node {node.name}: no Docker daemon answers at {where} ({e})") from None
    return client


def claim_network(client: docker.DockerClient, name: str, owner: Owner, replace: bool = False) -> str | None:
    """Free the name for this run's network: remove one this run made, or another run's when `replace`; refuse anyone
    else's. Returns what was decided (harness.owner), None when the name was free."""
    try:
        old = client.networks.get(name)
    except NotFound:
        return None
    labels = old.attrs.get("Labels") or {}
    decision = decide(labels, "network", owner, replace)
    if decision == FOREIGN:
        raise DeploymentError(f"a docker network named {name!r} already exists and was not created by this "
                              f"suite (no {LABEL}=network label), so it is left alone; remove it or set "
                              "network.name in the target")
    if decision == REFUSE:
        raise AnotherRunsDeployment(refusal("network", name, labels, "", f"docker network rm {name}, after its "
                                            "containers"))
    remove_network(client, name)
    return decision


def create_network(client: docker.DockerClient, target: Target, owner: Owner, replace: bool = False):
    """The nodes' network (cpu-local-2node): internal, labelled with its owner; see claim_network for one that holds
    the name already."""
    net = describe_network(target, owner)
    claim_network(client, net.name, owner, replace)
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=net.subnet)])
    try:
        return client.networks.create(net.name, driver=net.driver, internal=net.internal, ipam=ipam,
                                      check_duplicate=True, labels=net.labels)
    except APIError as e:
        raise DeploymentError(f"docker could not create network {net.name!r} ({net.subnet}): "
                              f"{e.explanation or e}") from None


def remove_network(client: docker.DockerClient, name: str) -> None:
    """Remove the suite's network, first the suite's containers still on it (a killed run's)."""
    try:
        net = client.networks.get(name)
    except NotFound:
        return
    for c in net.containers:
        if c.labels.get(LABEL) == "deployment":
            c.remove(force=True)
    try:
        net.remove()
    except NotFound:
        pass


def claim_container(client: docker.DockerClient, name: str, owner: Owner, replace: bool = False) -> str | None:
    """Free the name for this run's container: remove one this run made, or another run's (kept, running or left by
    a killed run) only when `replace`; refuse anyone else's. Returns what was decided (harness.owner), None when the
    name was free."""
    try:
        old = client.containers.get(name)
    except NotFound:
        return None
    decision = decide(old.labels, "deployment", owner, replace)
    if decision == FOREIGN:
        raise DeploymentError(
            f"a container named {name!r} already exists and was not started by this suite (it has no "
            f"{LABEL}=deployment label), so it is left alone. Stop or rename it, attach to it with "
            f"--attach, or set container.name in the target.")
    if decision == REFUSE:
        raise AnotherRunsDeployment(refusal("container", name, old.labels, old.status, f"docker rm -f {name}",
                                            "To run in it as it is instead, use --attach."))
    old.remove(force=True)
    return decision


def start_container(client: docker.DockerClient, target: Target, image: str, owner: Owner,
                    node: Node | None = None, replace: bool = False) -> Container:
    """Start the node's container exactly as the target says (harness.plan.describe_container), labelled with its
    owner; see claim_container for one that holds the name already."""
    node = node or target.node_list()[0]
    run = describe_container(target, image, node, owner)
    name = run.name
    claim_container(client, name, owner, replace)
    # The folders are on the node's host: only a daemon of this host can be checked from here (an ssh:// or tcp://
    # node's are not this host's: an Atlas runner's own /usr/local/dcmi says nothing of node2's).
    local = node.docker == "local" or node.docker.startswith("unix://")
    for i, (v, mount) in enumerate(zip(target.container.volumes, run.volumes)):
        if local and not Path(mount.host).exists():
            raise DeploymentError(f"container.volumes[{i}].host {v.host!r} does not exist on this host "
                                  f"(docker would create an empty folder at {v.container} instead)")
    if run.network is not None:  # the node's own address on the suite's network
        net = {"network": run.network, "hostname": run.hostname, "networking_config": {
            run.network: docker.types.EndpointConfig(client.api._version, ipv4_address=run.ipv4_address)}}
    else:
        net = {"network_mode": run.network_mode}
    try:
        handle = client.containers.run(
            run.image, run.command, name=name, detach=True, shm_size=run.shm_size, **net,
            devices=run.devices, init=run.init, working_dir=run.workdir, environment=run.env,
            volumes={m.host: {"bind": m.container, "mode": m.mode} for m in run.volumes}, labels=run.labels)
    except ImageNotFound:
        where = "this host" if node.docker == "local" else f"the host of node {node.name} ({node.docker})"
        raise DeploymentError(f"image {image!r} is not on {where}; build it (scripts/setup) or load it") from None
    except APIError as e:
        # A missing device fails at start but leaves a created container holding the name.
        try:
            client.containers.get(name).remove(force=True)
        except NotFound:
            pass
        raise DeploymentError(f"docker could not start container {name!r}: {e.explanation or e}") from None
    container = Container(handle, owned=True)

    def did_not_stay_running() -> NoReturn:
        logs = container.logs()[-2000:]
        container.remove()
        raise DeploymentError(f"container {name!r} did not stay running (status {handle.status}); "
                              f"its output:\n{logs}")

    def running() -> bool:
        if container.is_running():  # reloads handle.status
            return True
        if handle.status in ("exited", "dead"):
            did_not_stay_running()
        return False

    if not wait_until(running, timeout_s=target.container.start_timeout_s, interval_s=0.2):
        did_not_stay_running()
    return container


def remove_if_ours(client: docker.DockerClient, name: str, owner: Owner) -> None:
    """Remove the container of that name if this run started it (used when a start was interrupted)."""
    try:
        c = client.containers.get(name)
    except NotFound:
        return
    if c.labels.get(LABEL) == "deployment" and owner.owns(c.labels):
        c.remove(force=True)


def attach_container(client: docker.DockerClient, name: str) -> Container:
    try:
        handle = client.containers.get(name)
    except NotFound:
        raise DeploymentError(f"--attach: no container named {name!r} is running") from None
    if handle.status != "running":
        raise DeploymentError(f"--attach: container {name!r} is {handle.status}, not running")
    return Container(handle, owned=False)


class Process:
    """A background process in the container, with its own log and process group; its owner.

    `with Process.start(...) as proc:` stops it (SIGTERM to its group, SIGKILL after `stop_timeout` s) on any way
    out of the block, a Ctrl-C included. A start that fails or is interrupted after the launcher ran stops what
    it launched, so no path leaves a process without an owner.
    """

    def __init__(self, container: Container, name: str, pid: int, argv: list[str],
                 stop_timeout: float = STOP_TIMEOUT_S):
        self.container, self.name, self.pid, self.argv = container, name, pid, argv
        self.log_path = log_path(name)
        self.stop_timeout = stop_timeout

    @classmethod
    def start(cls, container: Container, name: str, argv: list[str], env: dict[str, str] | None = None,
              setup: list[str] | None = None, workdir: str | None = None,
              stop_timeout: float = STOP_TIMEOUT_S) -> Process:
        pidfile = pid_path(name)
        launcher, launcher_env = launch(name, argv, env, setup)
        container.exec(["mkdir", "-p", RUN_DIR])
        container.exec(["rm", "-f", pidfile])

        def launched_pid() -> int | None:
            text = container.read_file(pidfile)
            return int(text) if text and text.strip().isdigit() else None

        try:
            container.handle.exec_run(launcher, environment=launcher_env, workdir=workdir, detach=True)
            pid = wait_until(launched_pid, timeout_s=15, interval_s=0.1)
            if pid:
                return cls(container, name, pid, argv, stop_timeout)
        except BaseException:
            # Interrupted between the launch and its pid: the launcher may be running already.
            pid = launched_pid() if container.is_running() else None
            if pid:
                cls(container, name, pid, argv, stop_timeout).stop()
            raise
        raise DeploymentError(f"{name}: the launcher did not start in the container ({shlex.join(argv)})")

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def alive(self) -> bool:
        # A "gone" is read twice, half a second apart: once, on a loaded 2-core machine, one `docker exec cat`
        # of a live instance's stat came back empty and a healthy run went red. A dead process stays dead.
        for attempt in range(2):
            stat = self.container.read_file(f"/proc/{self.pid}/stat")
            # The state field follows the command name in parentheses; Z is a zombie (exited, not reaped).
            if stat and stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X"):
                return True
            if attempt == 0:
                time.sleep(0.5)
        return False

    def tail(self, lines: int = 40) -> str:
        return self.container.exec(["tail", "-n", str(lines), self.log_path]).output

    def last_line(self) -> str:
        lines = [x for x in self.tail(5).splitlines() if x.strip()]
        return lines[-1].strip() if lines else "(no output yet)"

    def log(self) -> str:
        return self.container.read_file(self.log_path) or ""

    def kill(self) -> str:
        """SIGKILL to its process group at once, as a crash would end it (no clean-up); says what happened."""
        if not self.container.is_running():
            return "gone with its container"
        self.container.exec(signal_group("KILL", self.pid))
        gone = wait_until(lambda: not self.alive(), timeout_s=10, interval_s=0.2)
        outcome = "killed" if gone else f"still running as pid {self.pid} after SIGKILL"
        log.info(f"{self.name}: {outcome}", extra={"phase": "process killed", "process_name": self.name,
                                                   "outcome": outcome})
        return outcome

    def stop(self, timeout: float | None = None) -> str:
        """SIGTERM to its process group, SIGKILL after `timeout` s (default: stop_timeout); says what happened."""
        if not self.container.is_running():
            return "gone with its container"
        self.container.exec(signal_group("TERM", self.pid))
        grace_s = self.stop_timeout if timeout is None else timeout
        # The last look after the grace: it may have gone in its final moment.
        if wait_until(lambda: not self.alive(), timeout_s=grace_s, interval_s=0.3) or not self.alive():
            outcome = "stopped"
        else:
            self.container.exec(signal_group("KILL", self.pid))
            time.sleep(0.5)
            outcome = "killed after SIGTERM was ignored" if not self.alive() else f"still running as pid {self.pid}"
        log.info(f"{self.name}: {outcome}", extra={"phase": "process stopped", "process_name": self.name,
                                                   "outcome": outcome})
        return outcome
