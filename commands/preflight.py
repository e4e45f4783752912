"""Preflight: check this host for a target before anything starts, each finding with its fix.

    python -m commands.preflight --target atlas-800t-a2      # a name under configs/ or a YAML path

Checks, in order, only what the target uses: architecture and Python; Docker answers; the NPU device files of
container.devices; the NPU driver's version (/usr/local/Ascend/driver/version.info) against the pool's segment size
(protocol ascend: segments over 32 GiB need HDK 25.5.0 or later on an A2, Mooncake issue 3791);
hccn_tool, npu-smi and hccn.conf at the target's npu paths (their host side when npu.checks_in is container); the
image on this host; the weights (the host folder of the volume holding model.path, with a config.json); Mooncake
importable in the image (as stage 3 imports it); the master's and the instances' ports free; host memory for the
pool's segments (harness.traps.pool_memory_fits_host). A target with nodes is checked for this machine's node
(the first one).

Each finding is `ok`, `PROBLEM` (with an indented `fix:` line) or `skip` (with the reason), then a summary line.

Exit codes:
    0  no problem
    1  at least one problem
    2  bad usage, or a target that does not validate (load_target's text is printed)
"""

from __future__ import annotations

import argparse
import ipaddress
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol

from harness import traps
from harness.config import ConfigError, Node, Target, host_memory_bytes, load_target, resolve_repo_path
from harness.traps import GiB
from kit.build import derived_tag

Status = Literal["ok", "problem", "skip"]

ARCHITECTURES = ("x86_64", "aarch64")
PYTHONS = ((3, 9), (3, 13))
DRIVER_VERSION_INFO = "/usr/local/Ascend/driver/version.info"
# Mooncake issue 3791 (kvcache-ai/Mooncake#3791, 910B/A2, protocol ascend): with HDK older than 25.5.0 the device
# builds the page tables of registered host memory at 4 KB, so one NPU registers ~20-32 GB; global_segment_size
# works at <= 32 GiB and fails at 100 GB. HDK >= 25.5.0 uses the host's page size.
SEGMENT_LIMIT_OLD_HDK = 32 * GiB
HDK_FIXED = "25.5.0"
# What stage 3 imports (tests/acceptance/test_03_mooncake.py); prints where the package was found.
MOONCAKE_IMPORT = "import mooncake, mooncake.store; print(mooncake.__file__)"
IMPORT_TIMEOUT_S = 120.0
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column
_WILDCARDS = {"0.0.0.0", "::"}


def _gib(n: float) -> str:
    """A size in GiB as harness/traps.py's messages write it."""
    return f"{n / GiB:.0f} GiB" if n % GiB == 0 else f"{n / GiB:.1f} GiB"


@dataclass(frozen=True)
class Finding:
    name: str
    status: Status
    seen: str  # what was seen (for a skip: why it was not checked)
    fix: str = ""  # one sentence, for a problem


def ok(name: str, seen: str) -> Finding:
    return Finding(name, "ok", seen)


def problem(name: str, seen: str, fix: str) -> Finding:
    return Finding(name, "problem", seen, fix)


def skip(name: str, why: str) -> Finding:
    return Finding(name, "skip", why)


class Docker(Protocol):
    """What the preflight asks a Docker daemon (LocalDocker; a fake in the unit tests)."""

    def ping(self) -> str: ...  # a description of the daemon; raises when none answers

    def has_image(self, ref: str) -> bool: ...

    def image_id(self, ref: str) -> str: ...  # the image's ID (sha256:...); the image is present

    def run_python(self, image: str, code: str, *, env: dict[str, str], volumes: dict[str, dict[str, str]],
                   timeout: float) -> tuple[int | None, str]: ...  # (exit code, None on timeout; output)


class LocalDocker:
    """This machine's daemon (DOCKER_HOST or the local socket) through the docker SDK."""

    def __init__(self) -> None:
        self._client = None

    def ping(self) -> str:
        import docker

        self._client = docker.from_env(timeout=30)
        self._client.ping()
        return f"Docker {self._client.version().get('Version', '?')} answers"

    def has_image(self, ref: str) -> bool:
        from docker.errors import ImageNotFound

        try:
            self._client.images.get(ref)
        except ImageNotFound:
            return False
        return True

    def image_id(self, ref: str) -> str:
        return self._client.images.get(ref).id

    def run_python(self, image: str, code: str, *, env: dict[str, str], volumes: dict[str, dict[str, str]],
                   timeout: float) -> tuple[int | None, str]:
        """`docker run --rm --entrypoint python3 IMAGE -c CODE`, removed on every way out."""
        import requests
        from docker.errors import APIError

        container = self._client.containers.create(image, ["-c", code], entrypoint=["python3"], environment=env,
                                                   volumes=volumes)
        try:
            try:
                container.start()
            except APIError as e:  # no python3 in the image, a volume docker refuses...
                return 127, str(e)
            try:
                rc = container.wait(timeout=timeout)["StatusCode"]
            except requests.exceptions.RequestException:
                return None, container.logs().decode(errors="replace")
            return rc, container.logs().decode(errors="replace")
        finally:
            container.remove(force=True)


# Paths: the target's strings, looked up under `root` (a fake host tree in the unit tests).

def on_host(root: Path, path: str) -> Path:
    """A host path of the target (absolute, or relative to this repository) under `root`."""
    return root / resolve_repo_path(path).relative_to("/")


def host_side(t: Target, container_path: str) -> str | None:
    """The host path a container path comes from through container.volumes; None when no volume holds it."""
    path = PurePosixPath(container_path)
    for v in t.container.volumes:
        inside = PurePosixPath(v.container)
        if path == inside or inside in path.parents:
            return str(PurePosixPath(v.host) / path.relative_to(inside))
    return None


def local_node(t: Target) -> Node:
    return t.node_list()[0]


def emulated(t: Target) -> bool:
    return t.npu_of(local_node(t)).emulator is not None


# The checks, in the order they run.

def check_architecture(machine: str) -> Finding:
    if machine in ARCHITECTURES:
        return ok("architecture", machine)
    return problem("architecture", f"{machine}, not one of {', '.join(ARCHITECTURES)}",
                   "run on an x86_64 or aarch64 host (Atlas 800T A2 servers are aarch64).")


def check_python(version: tuple[int, ...]) -> Finding:
    shown = ".".join(map(str, version[:3]))
    (lo, hi) = PYTHONS
    if lo <= tuple(version[:2]) <= hi:
        return ok("python", shown)
    return problem("python", f"{shown}, not 3.9 to 3.13",
                   "create .venv with a Python from 3.9 to 3.13 (scripts/setup uses python3 of this host).")


def check_docker(docker: Docker) -> Finding:
    try:
        return ok("docker", docker.ping())
    except Exception as e:  # noqa: BLE001 - any failure means no daemon answers
        return problem("docker", f"no Docker daemon answers ({e})",
                       "start dockerd (scripts/setup does, or `systemctl start docker`) and let this user use it "
                       "(group docker).")


def check_devices(t: Target, root: Path) -> Finding:
    host = [d.split(":")[0] for d in t.container.devices]
    if not host:
        return skip("npu devices", "container.devices lists none")
    missing = [d for d in host if not on_host(root, d).exists()]
    if not missing:
        return ok("npu devices", f"{len(host)} mapped from {', '.join(dict.fromkeys(host))}, all present")
    return problem("npu devices", f"{len(missing)} of {len(host)} missing: {', '.join(missing)}",
                   "run on the Atlas host with the Ascend NPU driver installed (it creates /dev/davinci*, "
                   "davinci_manager, devmm_svm and hisi_hdc), or drop the missing ones from container.devices.")


def driver_version(text: str) -> str | None:
    """The `Version=` value of the driver's version.info (package_version= when it has none)."""
    fields = dict(line.strip().partition("=")[::2] for line in text.splitlines() if "=" in line)
    return fields.get("Version") or fields.get("package_version") or None


def version_key(version: str) -> tuple[tuple[int, int], ...] | None:
    """A comparable key of a driver version: 25.5.0 > 25.5.rc1 > 25.3.rc1 (an RC comes before its release)."""
    key = []
    for part in version.lower().split("."):
        m = re.fullmatch(r"(\d+)|([a-z]+)(\d*)", part)
        if m is None:
            return None
        key.append((1, int(m.group(1))) if m.group(1) else (0, int(m.group(3) or 0)))
    while len(key) < 3:
        key.append((1, 0))
    return tuple(key)


def check_driver(t: Target, root: Path) -> Finding:
    name = "npu driver"
    if emulated(t):
        return skip(name, "the NPUs are emulated (npu.emulator): no driver is used")
    path = on_host(root, DRIVER_VERSION_INFO)
    if not path.is_file():
        return problem(name, f"no {DRIVER_VERSION_INFO}",
                       "install the Ascend HDK NPU driver and firmware (Ascend-hdk-910b-npu-driver_*.run).")
    version = driver_version(path.read_text(errors="replace"))
    key = version_key(version) if version else None
    if key is None:
        return problem(name, f"{DRIVER_VERSION_INFO} has no readable Version= line ({version!r})",
                       "reinstall the Ascend HDK NPU driver, whose version.info says Version=<version>.")
    cfg = t.mooncake_json(local_node(t))
    segment = cfg.global_segment_size
    if cfg.protocol != "ascend" or segment <= SEGMENT_LIMIT_OLD_HDK or key >= version_key(HDK_FIXED):
        return ok(name, f"{version} (mooncake.config: protocol {cfg.protocol}, global_segment_size "
                        f"{_gib(segment)})")
    return problem(name, f"driver {version} is older than HDK {HDK_FIXED} and mooncake.config.global_segment_size is "
                         f"{_gib(segment)} ({segment}), over 32 GiB: on an A2 such a segment fails to register "
                         "(Mooncake issue 3791)",
                   f"upgrade the NPU driver to Ascend HDK {HDK_FIXED} or later, or set "
                   f"mooncake.config.global_segment_size to at most {SEGMENT_LIMIT_OLD_HDK} (32 GiB).")


def check_npu_file(t: Target, root: Path, name: str, field: str, fix: str) -> Finding:
    """One of the NPU tools (or hccn.conf) where the target's checks will look for it, seen from the host."""
    npu = t.npu_of(local_node(t))
    if npu.emulator is not None:
        return skip(name, "emulated in the container (npu.emulator)")
    path = getattr(npu, field)
    if npu.checks_in == "host":
        host, where = path, f"npu.{field} {path}"
    else:
        host = host_side(t, path)
        if host is None:
            return skip(name, f"npu.{field} {path} is mounted from no host path (container.volumes): it must be in "
                              "the image, where stage 1 checks it")
        where = f"{host} (mounted at npu.{field} {path})" if host != path else f"{host} (mounted into the container)"
    if on_host(root, host).is_file():
        return ok(name, where)
    return problem(name, f"{where} is missing on this host", fix)


def check_tools(t: Target, root: Path) -> list[Finding]:
    return [
        check_npu_file(t, root, "hccn_tool", "hccn_tool",
                       "install the Ascend NPU driver (it ships hccn_tool) or set npu.hccn_tool to where it is."),
        check_npu_file(t, root, "npu-smi", "npu_smi",
                       "install the Ascend NPU driver (it ships npu-smi) or set npu.npu_smi to where it is."),
        check_npu_file(t, root, "hccn.conf", "hccn_conf",
                       "configure the NPUs' network with hccn_tool (it writes /etc/hccn.conf) or set npu.hccn_conf."),
    ]


def check_image(t: Target, docker: Docker | None) -> Finding:
    image = t.container.image
    if t.container.build is not None:
        return skip("image", f"built on this host from {t.container.build} (scripts/setup, python -m kit)")
    if docker is None:
        return skip("image", "Docker does not answer")
    if docker.has_image(image):
        return ok("image", f"{image} present")
    return problem("image", f"{image} is not on this host",
                   f"run `docker pull {image}`, or offline `docker pull {image} && docker save {image} -o image.tar` "
                   "on a machine with access, copy image.tar here and run `docker load -i image.tar`.")


def _model_paths(t: Target) -> list[str]:
    return sorted({t.model_path(x) for x in t.instances})


def check_weights(t: Target, root: Path) -> list[Finding]:
    return [check_model(t, root, path) for path in _model_paths(t)]


def check_model(t: Target, root: Path, path: str) -> Finding:
    host = host_side(t, path)
    get = "run scripts/setup (it builds the model)" if t.model.build else "put the weights there"
    if host is None:
        return problem("weights", f"no volume of container.volumes holds model.path {path}",
                       f"add a volume whose container side holds {path}, e.g. "
                       f"{{host: /data/models, container: {PurePosixPath(path).parent}}}, in the site file.")
    folder = on_host(root, host)
    if not folder.is_dir():
        return problem("weights", f"{host} (model.path {path} in the container) does not exist",
                       f"{get}, or point the volume at the weights' folder.")
    if not (folder / "config.json").is_file():
        return problem("weights", f"{host} (model.path {path}) has no config.json",
                       f"{get}: a Hugging Face model folder with config.json and its weights.")
    return ok("weights", f"{host} (model.path {path}) has config.json")


def _import_volumes(t: Target, root: Path) -> dict[str, dict[str, str]]:
    """The target's volumes that exist on this host, read-only: the import sees the driver libraries stage 3 sees."""
    return {str(resolve_repo_path(v.host)): {"bind": v.container, "mode": "ro"}
            for v in t.container.volumes if on_host(root, v.host).exists()}


def check_mooncake(t: Target, root: Path, docker: Docker | None, image_ok: bool, timeout: float) -> Finding:
    name = "mooncake import"
    image = t.container.image
    if t.container.build is not None:
        return skip(name, "the image is built by scripts/setup; stage 3 checks the import")
    if docker is None:
        return skip(name, "Docker does not answer")
    if not image_ok:
        return skip(name, f"image {image} is not on this host")
    if t.container.derive:  # the run uses the image derived from this one (the seed's Mooncake build)
        derived = derived_tag(t, docker.image_id(image))
        if not docker.has_image(derived):
            return problem(name, f"{derived}, the image container.derive makes from {image} with Mooncake, is "
                                 "not built", "run scripts/setup with this target: it builds it (it clones Mooncake "
                                 "from GitHub and compiles it, tens of minutes).")
        image = derived
    rc, output = docker.run_python(image, MOONCAKE_IMPORT, env=dict(t.container.env),
                                   volumes=_import_volumes(t, root), timeout=timeout)
    tail = (output.strip().splitlines() or ["(no output)"])[-1]
    if rc == 0:
        return ok(name, f"`import mooncake, mooncake.store` in {image}: {tail}")
    seen = f"did not finish in {timeout:.0f} s" if rc is None else f"failed (exit {rc}): {tail}"
    return problem(name, f"`import mooncake, mooncake.store` in {image} {seen}",
                   "use an image with Mooncake installed, such as the one the seed makes with its \"Install "
                   "Mooncake\" step (built from source with -DUSE_ASCEND_DIRECT=ON).")


# Ports: the listening sockets of /proc/net/tcp and tcp6.

def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # The kernel prints each 32-bit word in host order (little-endian on x86_64 and aarch64).
    packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(packed)
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def listening(text: str) -> list[tuple[str, int]]:
    """(address, port) of every LISTEN socket in a /proc/net/tcp or tcp6 text."""
    out = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) > 3 and cols[3] == _LISTEN:
            address, _, port = cols[1].partition(":")
            out.append((_address(address), int(port, 16)))
    return out


def _listeners(root: Path) -> list[tuple[str, int]]:
    found = []
    for name in ("tcp", "tcp6"):
        path = root / "proc" / "net" / name
        if path.is_file():
            found += listening(path.read_text())
    return found


def _wanted_ports(t: Target) -> list[tuple[str, int, str]]:
    """(bind address, port, field) of the processes that run on this machine's node. The master may bind every
    address (0.3.7.post2's admin server binds 0.0.0.0), so its ports are taken by a listener on any address."""
    here = local_node(t).name
    m = t.mooncake.master
    wanted = []
    if t.master_node().name == here:
        wanted += [("0.0.0.0", m.port, "mooncake.master.port"),
                   ("0.0.0.0", m.metrics_port, "mooncake.master.metrics_port")]
    wanted += [(x.host, x.port, f"{x.name} port") for x in t.instances if t.node_of(x).name == here]
    return wanted


def _clash(listen: str, bind: str) -> bool:
    bind = "127.0.0.1" if bind == "localhost" else bind
    return listen in _WILDCARDS or bind in _WILDCARDS or listen == bind


def check_ports(t: Target, root: Path) -> Finding:
    if t.container.network_mode != "host":
        return skip("ports", f"container.network_mode {t.container.network_mode}: the processes listen in the "
                             "containers' network, not the host's")
    if not (root / "proc" / "net" / "tcp").is_file():
        return skip("ports", "/proc/net/tcp cannot be read")
    listeners = _listeners(root)
    wanted = _wanted_ports(t)
    taken = [f"{port} ({field}; {addr} listens)" for bind, port, field in wanted
             for addr, p in listeners if p == port and _clash(addr, bind)]
    if not taken:
        return ok("ports", f"{', '.join(str(p) for _, p, _ in wanted)} free")
    return problem("ports", f"already in use: {', '.join(dict.fromkeys(taken))}",
                   "stop what listens there (`ss -ltnp` names it), or give the target other ports.")


def check_memory(t: Target, root: Path) -> Finding:
    memory = host_memory_bytes(root / "proc" / "meminfo")
    if memory is None:
        return skip("host memory", "MemTotal cannot be read from /proc/meminfo")
    found = traps.pool_memory_fits_host(t, memory)
    if not found:
        return ok("host memory", f"MemTotal {_gib(memory)} holds the pool's segments")
    seen, _, fix = found[0][1].rpartition("; ")
    return problem("host memory", seen,
                   f"mooncake.config.global_segment_size: {fix}, or run on a host with more memory.")


def run_preflight(target: Target | str | Path, *, root: Path = Path("/"), docker: Docker | None = None,
                  machine: str | None = None, python: tuple[int, ...] | None = None,
                  import_timeout: float = IMPORT_TIMEOUT_S) -> list[Finding]:
    """Every finding for `target` on the host under `root`, in order. A target given by name or path is loaded
    (ConfigError when it does not validate)."""
    t = target if isinstance(target, Target) else load_target(target)
    docker = docker if docker is not None else LocalDocker()
    findings = [check_architecture(machine or platform.machine()), check_python(python or tuple(sys.version_info))]
    daemon = check_docker(docker)
    findings += [daemon, check_devices(t, root), check_driver(t, root), *check_tools(t, root)]
    answering = docker if daemon.status == "ok" else None
    image = check_image(t, answering)
    findings += [image, *check_weights(t, root),
                 check_mooncake(t, root, answering, image.status == "ok", import_timeout),
                 check_ports(t, root), check_memory(t, root)]
    return findings


LABELS = {"ok": "ok", "problem": "PROBLEM", "skip": "skip"}


def render(findings: list[Finding], target: str) -> str:
    lines = []
    for f in findings:
        lines.append(f"{LABELS[f.status]:<8}{f.name}: {f.seen}")
        if f.status == "problem":
            lines.append(f"{'':<8}fix: {f.fix}")
    count = {s: sum(f.status == s for f in findings) for s in LABELS}
    lines.append(f"preflight {target}: {count['problem']} problem(s), {count['ok']} ok, {count['skip']} skipped")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(prog="python -m commands.preflight", description=doc.split("\n\n")[0],
                                     epilog=doc[doc.index("Exit codes:"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="cpu-local", help="YAML path or name under configs/ (default cpu-local)")
    parser.add_argument("--import-timeout", type=float, default=IMPORT_TIMEOUT_S,
                        help=f"seconds the Mooncake import in the image may take (default {IMPORT_TIMEOUT_S:.0f})")
    args = parser.parse_args(argv)  # bad usage: argparse exits 2
    try:
        t = load_target(args.target)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    findings = run_preflight(t, import_timeout=args.import_timeout)
    print(render(findings, t.name))
    return 1 if any(f.status == "problem" for f in findings) else 0


if __name__ == "__main__":
    sys.exit(main())
