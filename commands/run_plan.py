"""What a run of the acceptance suite does, action by action, as data, before anything runs (`pytest --plan`).

Built only from the descriptions the run executes (harness/plan.py: the network, each node's `docker run`, the files,
the master's and each instance's process, as harness/runtime.py's launcher starts them) and from the functions the
stage checks and the load generators call to build their commands and requests (harness/hccn.py, mooncake.py,
serving.py, bench.py, probe.py, aisbench.py, vllm_bench.py), and the kit's names for the image and the clients' venvs
(kit/). No Docker, no network, nothing started; what depends on this host (memory, free ports, the daemons, the image)
is listed as what the run would check. commands/plan_render.py prints it as a shell script or as JSON.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from harness import aisbench, bench, clients, hccn, mooncake, probe, runtime, serving, vllm_bench
from harness.config import ROOT, Instance, Node, Target
from harness.names import COLD, CROSS_INSTANCE_HIT, EVICT, LOCAL_HIT, RUN_STAMP, STEP_LABELS
from harness.npus import peer_pairs
from harness.plan import ContainerRun, FileWrite, Plan, ProcessRun, describe, docker_cli
from kit import build as kit_build
from kit import clients as kit_clients

RUN_DIR = "$KVPOOL_RUN_DIR"  # the run's folder, reports/<target>-<start>: known when the run starts
IMAGE = "$KVPOOL_IMAGE"  # the image, when only the host can name it (a derived image's tag hashes its base's ID)


@dataclass(frozen=True)
class Command:
    """One command line; `lines` only say where a person reading it would break it."""

    lines: list[list[str]]
    stdin: str | None = None  # fed on its standard input: a file's content
    output: str | None = None  # its output goes to this file
    assign: str | None = None  # its last line of output is this variable's value

    @property
    def argv(self) -> list[str]:
        return [t for line in self.lines for t in line]


@dataclass(frozen=True)
class Request:
    """An HTTP request the suite sends from this host (in Python; `curl` in the shell script)."""

    method: str
    url: str
    body: dict | None = None


@dataclass(frozen=True)
class Action:
    what: str
    where: str  # "host", or a node's container or shell
    commands: list[Command] = field(default_factory=list)
    request: Request | None = None
    notes: list[str] = field(default_factory=list)
    check: bool = False  # a check the run makes on this host before it starts anything; not made by --plan


@dataclass(frozen=True)
class Section:
    title: str
    actions: list[Action]


@dataclass(frozen=True)
class RunPlan:
    target: str
    source: str  # the --target given
    options: dict[str, Any]
    variables: dict[str, dict[str, str | None]]  # name -> its shell, its value when known here, what it is
    scripts: dict[str, dict[str, str]]  # name -> a script the commands pass as an argument, and what it is
    deployment: Plan
    sections: list[Section]


def _one(argv: list[str]) -> Command:
    return Command([argv])


def _by_option(argv: list[str]) -> list[list[str]]:
    """Lines of an argv: what precedes the first option, then each option with its values."""
    lines: list[list[str]] = [[]]
    for token in argv:
        if token.startswith("-") and len(token) > 1 and lines[-1]:
            lines.append([])
        lines[-1].append(token)
    return lines


def _shown(path: str | Path) -> str:
    """A path of this repository as the shell script, run from its folder, names it."""
    p = Path(path)
    return str(p.relative_to(ROOT)) if p.is_absolute() and ROOT in p.parents else str(p)


class _Where:
    """How a command reaches a node: its docker CLI flags, its container, its own shell."""

    def __init__(self, target: Target, node: Node):
        self.node, self.multi = node, target.multi_node
        self.docker = ["docker", *docker_cli(node)]
        self.container = target.container_name(node)

    def __str__(self) -> str:
        at = "" if self.node.docker == "local" else f" ({self.node.docker})"
        return f"{self.node.name}{at}: container {self.container}" if self.multi or at else \
            f"container {self.container}"

    def exec(self, argv: list[str], *options: str) -> list[str]:
        return [*self.docker, "exec", *options, self.container, *argv]

    def shell(self) -> tuple[list[str], str]:
        """Where stage 1's tools are on this node: its container's shell, or the node's own (this host or ssh)."""
        if self.node.docker == "local":
            return [], f"{self.node.name}: this host" if self.multi else "this host"
        if self.node.docker.startswith("ssh://"):
            return ["ssh", self.node.docker.removeprefix("ssh://")], f"{self.node.name}: {self.node.docker}"
        return [], f"{self.node.name}: its own shell"  # refused by the run (fixtures/hosts.py): ssh:// only


def _check(what: str, *commands: Command) -> Action:
    """A check the run makes on this host before it starts anything, with its hand-run equivalent if short."""
    return Action(what, "host", list(commands), check=True)


def _host_checks(t: Target, p: Plan, attach: bool, client: str) -> list[Action]:
    out = [_check(f"{n.name}'s Docker daemon answers ({n.docker}); nothing starts anywhere until every one does",
                  _one([*_Where(t, n).docker, "version"])) for n in t.node_list()]
    if attach:
        return out + [_check(f"container {c.name} is running (--attach uses it and never stops or removes it)",
                             _one([*_Where(t, t.node(c.node)).docker, "inspect", "--format", "{{.State.Status}}",
                                   c.name])) for c in p.containers]
    out += [_check(f"no container named {c.name} on {c.node}, or only one of this suite's own runs that this run may "
                   "remove (--replace-deployment; harness/owner.py)") for c in p.containers]
    if p.network is not None:
        out.append(_check(f"no docker network named {p.network.name}, or only one of this suite's runs"))
    out += [_check(f"the volumes' host folders of {c.node} exist on this host (docker would create empty ones)",
                   Command([["ls", "-d"], *([m.host] for m in c.volumes)])) for c in p.containers if c.volumes]
    m = t.mooncake.master
    return out + [
        _check("the pooled ranks' segments and local buffers fit in this host's memory (MemTotal; "
               "harness.traps.pool_memory_fits_host, also in the preflight), unless Docker is a remote daemon",
               _one(["grep", "MemTotal", "/proc/meminfo"])),
        _check("nothing accepts connections yet on the master's and the instances' ports: " + ", ".join(
            [f"{m.host}:{m.port}"] + [f"{x.host}:{x.port}" for x in t.instances])),
        _check(f"the load generator {client} installs on this host (harness.clients.unavailable)")]


def _image(t: Target, source: str) -> tuple[Action, str | None]:
    """The image fixture's kit.ensure_kit, run by hand; and the tag when it is known without Docker."""
    c = t.container
    argv = [_shown(sys.executable), "-c", "import sys, kit; from harness.config import load_target; "
            "print(kit.ensure_kit(load_target(sys.argv[1])))", source]
    if c.build is not None:
        try:
            tag = kit_build.image_tag(t, kit_build.base_tag(kit_build.BASE_PACKAGES))
        except kit_build.KitError:
            tag = None
        notes = [f"built offline from {c.build} when its inputs changed (a debootstrap base image, the wheels of its "
                 "lock, docker build), and the model into model.build.output: python -m kit --target " + source]
    elif c.derive is not None:
        tag, base_id = None, "<base image ID>"
        unknown = kit_build.derived_tag(t, base_id)  # hashes the placeholder: a tag no host has
        derive = [a if a != unknown else f"{unknown.split(':')[0]}:<hash of the recipe, the base image's ID and "
                  "the build args>" for a in kit_build.derive_argv(t, base_id)]
        derive[-1] = _shown(derive[-1])
        notes = [f"{c.image} must be on the host (docker load or docker pull); the containers run the image derived "
                 f"from it by {c.derive} (container.derive), built when missing:", " ".join(derive)]
    else:
        tag, notes = c.image, [f"{c.image} must be on the host (docker load or docker pull)"]
    if tag is not None:
        notes.append(f"its reference: {tag}")
    return Action("the image the containers run (the image fixture: kit.ensure_kit)", "host",
                  [Command([argv], assign="KVPOOL_IMAGE")], notes=notes), tag


def _docker_run(w: _Where, c: ContainerRun) -> Command:
    lines = [[*w.docker, "run", "-d"], ["--name", c.name]]
    if c.network is not None:
        lines += [["--network", c.network], ["--hostname", c.hostname or ""], ["--ip", c.ipv4_address or ""]]
    elif c.network_mode:
        lines.append(["--network", c.network_mode])
    lines.append(["--shm-size", c.shm_size])
    if c.init:
        lines.append(["--init"])
    if c.workdir is not None:
        lines.append(["-w", c.workdir])
    lines += [["--device", d] for d in c.devices]
    lines += [["-v", f"{m.host}:{m.container}:{m.mode}"] for m in c.volumes]
    lines += [["-e", f"{k}={v}"] for k, v in c.env.items()]
    lines += [["--label", f"{k}={v}"] for k, v in c.labels.items()]
    return Command(lines + [[c.image, *c.command]])


def _file(w: _Where, f: FileWrite, why: str) -> Action:
    if f.text is None:
        return Action(f"remove {f.path} ({why})", str(w), [_one(w.exec(["rm", "-f", f.path]))])
    write = f"mkdir -p {PurePosixPath(f.path).parent} && cat > {f.path}"
    return Action(f"write {f.path} ({why})", str(w), [Command([w.exec(["sh", "-c", write], "-i")], stdin=f.text)])


def _process(w: _Where, run: ProcessRun, ready: str) -> Action:
    """A process started in its container by the launcher, exactly as runtime.Process.start does."""
    launcher, env = runtime.launch(run.name, run.argv, run.env, run.setup)
    options = [*(["-w", run.workdir] if run.workdir else []), *(a for k, v in env.items() for a in ("-e", f"{k}={v}"))]
    head = launcher[:len(launcher) - len(run.argv)]  # bash -c LAUNCHER launcher LOG PIDFILE N, then the setup scripts
    notes = [f"source {s}" for s in run.setup] + [
        "environment, set after those (a $NAME in a value expands from the environment then):",
        *(f"  {k}={v}" for k, v in run.env.items())] if run.env or run.setup else []
    notes += [f"log: {runtime.log_path(run.name)}; it runs in its own process group; {ready}"]
    return Action(f"start {run.name}", str(w), [
        _one(w.exec(["mkdir", "-p", runtime.RUN_DIR])), _one(w.exec(["rm", "-f", runtime.pid_path(run.name)])),
        Command([[*w.docker, "exec", "-d"], *_by_option(options), [w.container, *head[:7]],
                 *([script] for script in head[7:]), *_by_option(run.argv)])],
        notes=notes)


def _get(url: str) -> Request:
    return Request("GET", url)


def _stage1(t: Target) -> list[Action]:
    out = []
    for n in t.node_list():
        w, npu = _Where(t, n), t.npu_of(n)
        prefix, where = (w.exec([]), str(w)) if npu.checks_in == "container" else w.shell()
        out.append(Action(f"every NPU's {', '.join(hccn.stage_checks(t.multi_node))} (run as one batch per node: "
                          "hccn.batch_script)", where,
                          [_one([*prefix, *hccn.hccn_argv(npu.hccn_tool, d, check)]) for d in npu.devices
                           for check in hccn.stage_checks(t.multi_node)]))
        out.append(Action("hccn.conf, against each NPU's -ip -g", where, [_one([*prefix, "cat", npu.hccn_conf])]))
        out.append(Action("every NPU's Health", where, [_one([*prefix, *hccn.npu_smi_argv(npu.npu_smi)])]))
    if t.multi_node:
        for pair in peer_pairs(t):
            w, npu = _Where(t, t.node(pair.local.node)), t.npu_of(t.node(pair.local.node))
            prefix, where = (w.exec([]), str(w)) if npu.checks_in == "container" else w.shell()
            address = f"<address of {pair.peer.label} by its -ip -g>"
            out.append(Action(f"{pair.local.label} reaches {pair.peer.label}", where,
                              [_one([*prefix, *hccn.ping_argv(npu.hccn_tool, pair.local.id, address)])]))
    return out


def _stage2(t: Target, p: Plan) -> list[Action]:
    out = []
    for c in p.containers:
        w = _Where(t, t.node(c.node))
        out.append(Action("running, its network, devices, mounts and shm size as docker reports them", "host",
                          [_one([*w.docker, "inspect", c.name])]))
        inside = [d.split(":")[1] for d in c.devices] + [m.container for m in c.volumes]
        out.append(Action("each device and volume is there inside", str(w),
                          [_one(w.exec(["test", "-e", path])) for path in inside]))
        out.append(Action("/dev/shm's size inside", str(w), [_one(w.exec(runtime.SHM_SIZE_ARGV))]))
    return out


def _stage3(t: Target, p: Plan) -> list[Action]:
    m = t.mooncake.master
    master = _Where(t, t.master_node())
    out = [Action("import mooncake, mooncake.store: its file and version", str(_Where(t, n)),
                  [_one(_Where(t, n).exec(["python3", "-c", mooncake.IMPORT_CHECK]))]) for n in t.node_list()]
    out.append(Action("the master's /health says service_ready, its process is alive, its RPC port "
                      f"{m.host}:{m.port} accepts", "host", request=_get(mooncake.master_url(t, "/health"))))
    out.append(Action(f"inside, `ps` shows the master's pid running {m.command[0]} and `ss -ltn` (or netstat) its "
                      f"ports {m.port} and {m.metrics_port} listening (read by pytest-testinfra)", str(master)))
    for n in t.node_list():
        w = _Where(t, n)
        argv, env = mooncake.probe_command(t)
        out.append(Action("mooncake.json as rendered", str(w), [_one(w.exec(["cat", t.mooncake.config_path]))]))
        out.append(Action("a put, get and remove through the pool by a client of its own (the master's key count "
                          "before and after, from /metrics)", str(w),
                          [_one(w.exec(argv, *(a for k, v in env.items() for a in ("-e", f"{k}={v}"))))]))
    out.append(Action("the master's key count", "host", request=_get(mooncake.master_url(t, "/metrics"))))
    return out


def _stage4(t: Target, p: Plan) -> list[Action]:
    out = []
    for x, run in zip(t.instances, p.instances):
        url, w = serving.instance_url(x), _Where(t, t.node_of(x))
        out.append(Action(f"{x.name} ready: /health 200 within {x.ready_timeout_s:.0f} s of its start "
                          "(instances[].ready_timeout_s), failing at once if it exits or its log names a start-up "
                          "failure", "host", request=_get(f"{url}/health")))
        out.append(Action(f"{x.name} lists the served model {t.model.served_name!r}", "host",
                          request=_get(f"{url}/v1/models")))
        out.append(Action(f"{x.name} answers a completion with text", "host", request=Request(
            "POST", f"{url}/v1/completions",
            serving.completion_body(t.model.served_name, serving.CHECK_PROMPT, serving.CHECK_MAX_TOKENS))))
        if x.kv_transfer_config is not None:
            line = serving.connector_line(x.kv_transfer_config.kv_connector)
            out.append(Action(f"{x.name}'s log says its connector was created", str(w),
                              [_one(w.exec(["grep", "-F", line, runtime.log_path(run.name)]))]))
        if "external_hits" in t.benchmark.evidence:
            out.append(Action(f"{x.name} exports vllm:external_prefix_cache_queries", "host",
                              request=_get(f"{url}/metrics")))
    return out


def _step(t: Target, client: str, step: str, x: Instance, dataset: str, num_prompts: int) -> Action:
    b, served, url = t.benchmark, t.model.served_name, serving.instance_url(x)
    what = f"{STEP_LABELS[step]} on {x.name}: {num_prompts} prompts of {dataset}, {b.concurrency} in flight"
    snapshot = ("before and after it, every instance's /metrics and the master's: the evidence "
                f"({', '.join(b.evidence) or 'none declared'})")
    if client == "ours":
        return Action(what, "host", request=Request("POST", f"{url}/v1/completions", bench.stream_body(
            served, f"<prompt i of {dataset}>", b.output_len)), notes=[
            "each prompt once, streamed, from this process (harness/bench.py); TTFT from send to the first text",
            snapshot])
    venv = kit_clients.CLIENTS_DIR / kit_clients.venv_name(client, t)
    work = Path(RUN_DIR) / clients.WORK / step
    host = t.host_model_path(x)
    copy = clients.tokenizer_copy(work.parent, x.name)
    tokenizer = str(host if host is not None else copy)
    notes = [snapshot, f"tokenizer: {host} on the host, if it is there, else its files copied out of {x.name}'s "
                       f"container into {copy}" if host is not None else
             f"tokenizer: its files copied out of {x.name}'s container into {copy}"]
    if client == "aisbench":
        configs = aisbench.configs_dir(work)
        argv = aisbench.command(venv, work, configs, aisbench.dataset_name(step), num_prompts)
        env = aisbench.command_env(configs)
        notes.append(f"its model config, API class and the step's prompts are written into {configs} first")
    else:
        argv = vllm_bench.command(venv, work, url, served, tokenizer, num_prompts, output_len=b.output_len,
                                  concurrency=b.concurrency)
        env = dict(vllm_bench.COMMAND_ENV)
        notes.append(f"the step's prompts are written into {work}/prompts.json first (ShareGPT)")
    notes.append("environment: " + " ".join(f"{k}={v}" for k, v in env.items()))
    return Action(what, "host", [Command([[str(a) for a in line] for line in _by_option(argv)])], notes=notes)


def _warmup(t: Target) -> list[Action]:
    """benchmark.warmup: each instance's set to it cold, then to every other (harness/bench.py warm_up)."""
    w, b = t.benchmark.warmup, t.benchmark
    if w is None:
        return []
    n, length = len(t.instances), w.input_len or b.input_len
    out = []
    for k in range(n):
        for i in [k, *(j for j in range(n) if j != k)]:
            x = t.instances[i]
            out.append(Action(
                f"warm-up set {k + 1} on {x.name}: {w.num_prompts} prompts of {length} tokens starting with "
                f"{bench.WARMUP_PREFIX!r} (seed {w.seed}), {b.concurrency} in flight", "host",
                request=Request("POST", f"{serving.instance_url(x)}/v1/completions", bench.stream_body(
                    t.model.served_name, f"<warm-up prompt i of set {k + 1}>", w.output_len)),
                notes=["no block of these prompts is one of dataset A's; step 1 must then be served by neither cache"]))
    return out


def _stage5(t: Target, client: str) -> list[Action]:
    b = t.benchmark
    first, peer = t.roles()
    out = [Action(f"dataset A: {b.num_prompts} prompts of seeded random characters (seed {b.seed}), each exactly "
                  f"{b.input_len} tokens by the served tokenizer", "host", request=Request(
                      "POST", serving.instance_url(t.instances[0]) + "/tokenize",
                      bench.tokenize_body(t.model.served_name, "<candidate text>")),
                  notes=["/tokenize computes no KV"]),
           *_warmup(t),
           _step(t, client, COLD, first, "dataset A", b.num_prompts)]
    if b.eviction is not None:
        out.append(_step(t, client, EVICT, first, f"dataset B (seed {b.eviction.seed})",
                         b.eviction.num_prompts or b.num_prompts))
    out += [_step(t, client, LOCAL_HIT, first, "dataset A", b.num_prompts),
            _step(t, client, CROSS_INSTANCE_HIT, peer, "dataset A", b.num_prompts)]
    c = b.correctness
    if c.mode == "probe" and len(t.instances) >= 2:
        for role, x in (("cold", first), ("local_hit", first), ("pool_hit", peer)):
            out.append(Action(f"probe {role} on {x.name}: each of {c.num_prompts} probe prompts of {c.input_len} "
                              "tokens, one request at a time", "host", request=Request(
                                  "POST", serving.instance_url(x) + "/v1/completions",
                                  probe.request_body(t.model.served_name, "<probe prompt i>", c))))
        out.append(Action(f"probe miss control on {peer.name}: a prompt never sent", "host", request=Request(
            "POST", serving.instance_url(peer) + "/v1/completions",
            probe.request_body(t.model.served_name, "<a fresh prompt>", c))))
    return out


def _teardown(t: Target, p: Plan, attach: bool, keep: bool) -> list[Action]:
    out = [Action("the run writes results.json, each step's records (<step>.jsonl), ttft.png and the mooncake.json "
                  f"copies into {RUN_DIR}", "host")]
    if keep:
        return out + [Action("--keep-deployment: nothing is stopped or removed", "host")]
    if attach:
        for run, grace, when in [*((x, serving.STOP_TIMEOUT_S, "the instances all at once") for x in p.instances),
                                 (p.master, runtime.STOP_TIMEOUT_S, "then the master")]:
            w = _Where(t, t.node(run.node))
            kill = " ".join(runtime.signal_group("TERM", f'"$(cat {runtime.pid_path(run.name)})"'))
            out.append(Action(f"stop {run.name} ({when}): SIGTERM to its process group, SIGKILL after {grace:.0f} s",
                              str(w), [_one(w.exec(["sh", "-c", kill]))]))
    for c in reversed(p.containers):
        w = _Where(t, t.node(c.node))
        logs = f"{RUN_DIR}/logs"
        name = f"{c.name}.log" if t.multi_node else "container.log"
        commands = [Command([[*w.docker, "logs", c.name]], output=f"{logs}/{name}"),
                    _one([*w.docker, "cp", f"{c.name}:{runtime.RUN_DIR}/.", logs])]
        if not attach:
            commands.append(_one([*w.docker, "rm", "-f", c.name]))
        out.append(Action(f"keep {c.name}'s output and process logs" + ("" if attach else ", then remove it (which "
                          "ends the master and instances in it)"), "host", commands))
    if p.network is not None and not attach:
        out.append(Action(f"remove the network {p.network.name}", "host",
                          [_one([*_Where(t, t.master_node()).docker, "network", "rm", p.network.name])]))
    return out


def build(target: Target, source: str, *, client: str | None = None, attach: bool = False,
          keep: bool = False) -> RunPlan:
    """The run's plan: `source` is the --target given; the options as the run would take them."""
    client = client or target.benchmark.client
    image_action, tag = _image(target, source)
    p = describe(target, tag or IMAGE)
    sections = [Section("what the run checks on the host first (not checked now)",
                        _host_checks(target, p, attach, client))]
    if not attach:
        sections.append(Section("image", [image_action]))
        if p.network is not None:
            n = p.network
            sections.append(Section("network", [Action(f"the nodes' network {n.name}", "host", [Command([
                [*_Where(target, target.master_node()).docker, "network", "create", "--driver", n.driver],
                *(["--internal"] for _ in [n] if n.internal), ["--subnet", n.subnet],
                *(["--label", f"{k}={v}"] for k, v in n.labels.items()), [n.name]])])]))
        containers = []
        for c in p.containers:
            w = _Where(target, target.node(c.node))
            containers.append(Action(f"{c.node}'s container, detached, kept up by `{' '.join(c.command)}`", "host",
                                     [_docker_run(w, c)]))
            containers += [_file(w, f, "the NPU emulator's, from npu.emulator") for f in p.emulator_files
                           if f.node == c.node]
        sections.append(Section("containers", containers))
    sections.append(Section("files", [_file(_Where(target, target.node(f.node)), f, "mooncake.config, "
                                            "where MOONCAKE_CONFIG_PATH points") for f in p.files]))
    m = target.mooncake.master
    sections.append(Section("master", [_process(_Where(target, target.master_node()), p.master, (
        f"ready when {m.host}:{m.port} accepts, {mooncake.master_url(target, '/health')} says ready and it is still "
        f"alive, within {m.ready_timeout_s:.0f} s"))]))
    sections.append(Section("instances", [_process(_Where(target, target.node_of(x)), run, (
        "started together, as the first acceptance test begins; they load while stages 1-3 run"))
        for x, run in zip(target.instances, p.instances)]))
    sections += [Section("stage 1 environment", _stage1(target)), Section("stage 2 container", _stage2(target, p)),
                 Section("stage 3 mooncake", _stage3(target, p)), Section("stage 4 serving", _stage4(target, p)),
                 Section(f"stage 5 kv pool (load generator: {client})", _stage5(target, client)),
                 Section("teardown, in reverse order (also on a failure, Ctrl-C or SIGTERM)",
                         _teardown(target, p, attach, keep))]
    variables = {
        "KVPOOL_RUN_DIR": {"shell": f"reports/{target.name}-$(date +{RUN_STAMP})", "value": None,
                           "means": "the run's folder: logs, results.json, step records"},
        "KVPOOL_IMAGE": {"shell": None, "value": tag, "means": "the image the containers run (section image)"},
    }
    scripts = {
        "KVPOOL_LAUNCHER": {"text": runtime.LAUNCHER, "means": "harness/runtime.py's launcher: it records the "
                            "process's pid, sends its output to its log, sources its setup scripts, then runs EXPAND"},
        "KVPOOL_EXPAND": {"text": runtime.EXPAND, "means": "sets the process's environment ($NAME expanded from the "
                          "environment the setup scripts left) and becomes it, in its own process group"},
        "KVPOOL_MOONCAKE_IMPORT": {"text": mooncake.IMPORT_CHECK, "means": "stage 3's import of mooncake"},
        "KVPOOL_MOONCAKE_PROBE": {"text": mooncake.PROBE, "means": "stage 3's pool probe: a client of its own puts, "
                                  "gets and removes one key, then leaves"},
    }
    options = {"client": client, "attach": attach, "keep_deployment": keep}
    return RunPlan(target.name, source, options, variables, scripts, p, sections)
