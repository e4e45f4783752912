"""A target's plan against the guide it follows: both read into one key space, every difference named, and each one
either the suite's own way of running things (SUITE_WAYS, each with its reason), a departure the target lists with
its reason (`departures:`), or unexplained. A listed departure that is no difference any more is stale.

Keys: `container image`, `container device /dev/davinci0`, `container volume /root/.cache`, `mooncake.json
protocol`, `master --port`, `master workdir`, `instance-1 env ASCEND_BUFFER_POOL`, `instance-1 source`,
`instance-1 vllm serve` (its arguments: the model), `instance-1 --kv-transfer-config.kv_role`, `instance-1 redirect` (a
guide's `> mix.log 2>&1`); on a target with several nodes each node's container and mooncake.json are
`container@node2 ...`, and each process has a `node` key.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.guide import DOCKER_RUN_SWITCHES, Block, flatten, parse_options, parse_script, placeholder_match
from harness.plan import ContainerRun, Plan, ProcessRun

if TYPE_CHECKING:
    from harness.config import Departure

CONTAINERS = "(the container's)"  # a process's working folder when it is its container's
NOT_SAID = "(not said)"


class _Absent:
    def __repr__(self) -> str:
        return "absent"


ABSENT = _Absent()

# What the suite does its own way on every target, so no guide has it and no target lists it as a departure.
SUITE_WAYS: list[tuple[str, str]] = [
    (r"instance-\S+ --enable-prompt-tokens-details",
     "added for the correctness probe, which reads usage.prompt_tokens_details.cached_tokens to know each hit's "
     "length; it changes no computation"),
    (r"container(@\S+)? (command|init|option (--rm|-it|-ti|-i|-t|--interactive|--tty))",
     "the guide's container is an interactive bash removed when it exits (-it ... bash, --rm); the suite runs it "
     "detached with `sleep infinity` under an init (which reaps what it execs), execs the master and the instances "
     "into it, and removes it itself at the end (not with --keep-deployment)"),
    (r"container(@\S+)? label \S+", "whose deployment it is (harness/owner.py): the suite's own bookkeeping"),
]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _device(spec: str) -> tuple[str, str]:
    parts = spec.split(":")
    host, inside = parts[0], parts[1] if len(parts) > 1 else parts[0]
    return inside, f"{host}:{parts[2] if len(parts) > 2 else 'rwm'}"


def _volume(host: str, inside: str, mode: str) -> tuple[str, str]:
    return posixpath.normpath(inside), f"{posixpath.normpath(host)}:{mode}"  # docker reads lib64/ as lib64


DOCKER_RUN_FIELDS = {"--name": "name", "--net": "network", "--network": "network", "--shm-size": "shm-size",
                     "-w": "workdir", "--workdir": "workdir", "--hostname": "hostname", "-h": "hostname",
                     "--ip": "ip", "--init": "init"}


def docker_run_keys(argv: list[str]) -> dict[str, Any]:
    """A `docker run` command line as container keys (without the role)."""
    o = parse_options(argv, DOCKER_RUN_SWITCHES, stop_at_argument=True)
    out: dict[str, Any] = {}
    if o.arguments:
        out["image"] = o.arguments[0]
        if o.arguments[1:]:
            out["command"] = o.arguments[1:]
    for flag, value in o.options.items():
        if flag in DOCKER_RUN_FIELDS:
            out[DOCKER_RUN_FIELDS[flag]] = value
        elif flag == "--device":
            out.update({f"device {k}": v for k, v in map(_device, _as_list(value))})
        elif flag in ("-v", "--volume"):
            for spec in _as_list(value):
                host, inside, *mode = spec.split(":")
                k, v = _volume(host, inside, mode[0] if mode else "rw")
                out[f"volume {k}"] = v
        elif flag in ("-e", "--env", "-l", "--label"):
            kind = "env" if flag in ("-e", "--env") else "label"
            out.update({f"{kind} {k}": v for k, _, v in (s.partition("=") for s in _as_list(value))})
        else:
            out[f"option {flag}"] = value
    return out


def container_keys(run: ContainerRun) -> dict[str, Any]:
    """The container the suite runs, in the same keys."""
    out: dict[str, Any] = {"image": run.image, "name": run.name, "command": list(run.command),
                           "network": run.network or run.network_mode, "shm-size": run.shm_size}
    if run.network:
        out.update(hostname=run.hostname, ip=run.ipv4_address)
    if run.workdir is not None:
        out["workdir"] = run.workdir
    if run.init:
        out["init"] = True
    out.update({f"device {k}": v for k, v in map(_device, run.devices)})
    out.update({f"volume {k}": v for k, v in (_volume(m.host, m.container, m.mode) for m in run.volumes)})
    out.update({f"env {k}": v for k, v in run.env.items()})
    out.update({f"label {k}": v for k, v in run.labels.items()})
    return out


def process_keys(argv: list[str], env: dict[str, str], setup: list[str], workdir: str, container: str,
                 node: str | None) -> dict[str, Any]:
    """A process (the master, an instance) as keys: its program's arguments and options (JSON values flattened),
    environment, sourced scripts, working folder, container and, on several nodes, node."""
    o = parse_options(argv)
    out: dict[str, Any] = {o.program: o.arguments, "workdir": workdir, "container": container}
    if node is not None:
        out["node"] = node
    for flag, value in o.options.items():
        out.update(flatten(flag, value))
    out.update({f"env {k}": v for k, v in env.items()})
    if setup:
        out["source"] = list(setup)
    return out


def _prefixed(role: str, keys: dict[str, Any]) -> dict[str, Any]:
    return {f"{role} {k}": v for k, v in keys.items()}


def _json_keys(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in json.loads(text).items():
        out.update(flatten(k, v))
    return out


def plan_keys(plan: Plan) -> dict[str, Any]:
    """Everything the plan runs, as keys."""
    multi = len(plan.containers) > 1
    at = {c.node: (f"@{c.node}" if multi else "") for c in plan.containers}
    workdirs = {c.name: c.workdir for c in plan.containers}
    out: dict[str, Any] = {}
    for c in plan.containers:
        out.update(_prefixed(f"container{at[c.node]}", container_keys(c)))
    for f in plan.files:
        out.update(_prefixed(f"mooncake.json{at[f.node]}", _json_keys(f.text)))

    def process(run: ProcessRun, role: str) -> None:
        own = run.workdir if run.workdir not in (None, workdirs.get(run.container)) else CONTAINERS
        out.update(_prefixed(role, process_keys(run.argv, run.env, run.setup, own, run.container,
                                                run.node if multi else None)))

    process(plan.master, "master")
    for x in plan.instances:
        process(x, x.name)
    return out


def _one(role: str, commands: list[list[str]]) -> list[str]:
    if len(commands) != 1:
        raise ValueError(f"the transcription's {role} block runs {len(commands)} commands, not one: "
                         f"{[' '.join(c)[:60] for c in commands]}")
    return commands[0]


def guide_keys(blocks: dict[str, Block], nodes: list[str]) -> dict[str, Any]:
    """A guide's transcription as keys, laid out on the target's nodes: a block for "each node" (or one that does not
    say, for the container and mooncake.json) on every node; a process on the node its heading names."""
    multi = len(nodes) > 1
    out: dict[str, Any] = {}
    container, workdir = None, None
    for role, block in blocks.items():
        on = nodes if block.node in (None, "each node") else [block.node]
        if role == "container":
            runs = [c for c in parse_script(block.text).commands if c[:2] == ["docker", "run"]]
            keys = docker_run_keys(_one(role, runs))
            container, workdir = keys.get("name"), keys.get("workdir")
            for n in on:
                out.update(_prefixed(f"container@{n}" if multi else "container", keys))
        elif role == "mooncake.json":
            for n in on:
                out.update(_prefixed(f"mooncake.json@{n}" if multi else "mooncake.json", _json_keys(block.text)))
    for role, block in blocks.items():
        if role in ("container", "mooncake.json"):
            continue
        script = parse_script(block.text)
        inside = [c for c in script.commands if c[:2] == ["docker", "exec"]]
        argv = _one(role, [c for c in script.commands if c[:2] != ["docker", "exec"]])
        redirects = script.redirects[script.commands.index(argv)]
        where = parse_options(inside[-1], DOCKER_RUN_SWITCHES, stop_at_argument=True).arguments[0] if inside \
            else container
        own = script.cwd if script.cwd not in (None, workdir) else CONTAINERS
        node = (block.node or NOT_SAID) if multi else None
        out.update(_prefixed(role, process_keys(argv, script.env, script.sources, own, where, node)))
        if redirects:  # the suite writes every process's output to the run's logs/ itself: a plan has none
            out[f"{role} redirect"] = " ".join(redirects)
    return out


@dataclass(frozen=True)
class Difference:
    key: str
    guide: Any
    target: Any
    note: str = ""

    def __str__(self) -> str:
        return f"{self.key}: guide {self.guide!r}, target {self.target!r}{self.note}"


def differences(guide: dict[str, Any], target: dict[str, Any]) -> tuple[list[Difference], dict[str, str]]:
    """Every key whose values differ, and what each of the guide's placeholders stands for in the target. A
    placeholder fits any value, the same one wherever it appears."""
    bindings: dict[str, str] = {}
    seen_at: dict[str, str] = {}
    out = []
    for key in sorted(set(guide) | set(target)):
        g, t = guide.get(key, ABSENT), target.get(key, ABSENT)
        bound = placeholder_match(g, t)
        if bound is not None:
            clash = [p for p, v in bound.items() if bindings.get(p, v) != v]
            if not clash:
                for p, v in bound.items():
                    bindings.setdefault(p, v)
                    seen_at.setdefault(p, key)
                continue
            out.append(Difference(key, g, t, "; " + ", ".join(f"{p} is {bindings[p]!r} at {seen_at[p]}"
                                                              for p in clash)))
        elif g != t:
            out.append(Difference(key, g, t))
    return out, bindings


@dataclass
class Verdict:
    unexplained: list[Difference] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # listed departures that are no difference
    departed: list[tuple[Difference, str]] = field(default_factory=list)  # with the target's reason
    suite: list[tuple[Difference, str]] = field(default_factory=list)  # with SUITE_WAYS' reason
    bindings: dict[str, str] = field(default_factory=dict)

    def problems(self, source: str) -> list[str]:
        return ([f"{d}: not the guide's, and {source} lists no departure for it (departures: at, reason)"
                 for d in self.unexplained]
                + [f"{source} lists the departure {k!r}, but it no longer differs from the guide: remove it"
                   for k in self.stale])


def judge(found: list[Difference], departures: list[Departure], bindings: dict[str, str] | None = None) -> Verdict:
    """Each difference as the suite's way, a listed departure, or unexplained; and the listed keys that no longer
    differ."""
    v = Verdict(bindings=dict(bindings or {}))
    reasons = {k: d.reason for d in departures for k in d.at}
    used = set()
    for d in found:
        way = next((why for pattern, why in SUITE_WAYS if re.fullmatch(pattern, d.key)), None)
        if way is not None:
            v.suite.append((d, way))
        elif d.key in reasons:
            v.departed.append((d, reasons[d.key]))
            used.add(d.key)
        else:
            v.unexplained.append(d)
    v.stale = [k for k in reasons if k not in used]
    return v


def compare(plan: Plan, blocks: dict[str, Block], departures: list[Departure]) -> Verdict:
    """The plan against a guide's transcription, judged by the target's departures."""
    found, bindings = differences(guide_keys(blocks, [c.node for c in plan.containers]), plan_keys(plan))
    return judge(found, departures, bindings)
