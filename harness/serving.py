"""The vLLM instances: start, readiness, and what they answer (/health, /v1/models, completions, /metrics)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

import requests

from harness import failure_lines
from harness.config import Instance, Target
from harness.metrics import Metrics, NotPrometheus
from harness.net import port_accepts
from harness.plan import describe_instance
from harness.progress import logger
from harness.runtime import Container, DeploymentError, Process
from harness.waiting import wait_until

log = logger("deployment")  # an instance ready, or still waited for: [deployment] lines
PROGRESS_EVERY_S = 30
STARTUP_READ_EVERY_S = 5  # how often the waiting instances' logs are read for start-up failure lines
# An idle instance exits in 1-2 s, but one with open streams waits for them (an interrupted benchmark); SIGKILL
# after 10 s keeps Ctrl-C and Jenkins aborts fast.
STOP_TIMEOUT_S = 10


@dataclass
class RunningInstance:
    spec: Instance
    process: Process
    started_at: float = field(default_factory=time.monotonic)  # its ready_timeout_s counts from here

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def url(self) -> str:
        return instance_url(self.spec)


def instance_url(x: Instance) -> str:
    """Where an instance serves: /health, /v1/models, /v1/completions, /metrics, /tokenize."""
    return f"http://{x.host}:{x.port}"


# Stage 4's completion: a short greedy one, and the line vLLM's connector factory logs when it creates the target's
# connector ("Creating v1 connector with name: X ...").
CHECK_PROMPT, CHECK_MAX_TOKENS = "The KV cache pool says", 8


def connector_line(kv_connector: str) -> str:
    return f"connector with name: {kv_connector}"


def in_role(target: Target, instances: list[RunningInstance], role: str) -> RunningInstance:
    """The running instance that plays `role` in benchmark.roles: "first" (steps 1 and 2: it fills the pool) or
    "peer" (step 3: it reads it)."""
    first, peer = target.roles()
    name = {"first": first.name, "peer": peer.name}[role]
    return next(i for i in instances if i.name == name)


def _require_port_free(x: Instance) -> None:
    if port_accepts(x.host, x.port):
        raise DeploymentError(f"{x.name}: {x.host}:{x.port} already accepts connections before the instance "
                              "started; another process holds the port (see `ss -ltnp`)")


def start_instance(container: Container, target: Target, x: Instance, log_name: str | None = None) -> RunningInstance:
    """Launch one instance with its own environment; it is ready once wait_ready says so. `log_name`: its process
    and log name when not the instance's (a restart keeps the first log)."""
    _require_port_free(x)
    run = describe_instance(target, x, log_name)
    return RunningInstance(x, Process.start(container, run.name, run.argv, env=run.env, setup=run.setup,
                                            workdir=run.workdir, stop_timeout=STOP_TIMEOUT_S))


def start_instances(containers: Mapping[str, Container], target: Target) -> list[RunningInstance]:
    """Start every instance at once (not one after the other), each in its node's container (`containers` by node
    name) with its own environment."""
    for x in target.instances:  # every port before any start: a taken one starts nothing
        _require_port_free(x)
    with ExitStack() as owner:  # all or none: an instance that cannot start stops the ones started before it
        started = []
        for x in target.instances:
            started.append(start_instance(containers[target.node_of(x).name], target, x))
            owner.enter_context(started[-1].process)
        owner.pop_all()
        return started


def stop_all(instances: list[RunningInstance]) -> None:
    """Stop the instances at once (each SIGTERM, then SIGKILL after its stop timeout): one after the other would
    add their exit times up."""
    with ThreadPoolExecutor(max_workers=max(len(instances), 1)) as pool:
        list(pool.map(lambda i: i.process.stop(), instances))


def healthy(instance: RunningInstance, timeout: float = 3.0) -> bool:
    try:
        return requests.get(f"{instance.url}/health", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def wait_ready(instances: list[RunningInstance], watch: list[Process] = ()) -> dict[str, float]:
    """Wait until every instance answers /health 200; fail at once, with its log tail, if one exits, if its log says
    its pool client gave up (harness.failure_lines: a segment that cannot mount, a client that cannot be created),
    or if a process they depend on (`watch`: the master) dies meanwhile.

    Logs a line per waiting instance at least every 30 s ([deployment]). Returns seconds to ready per instance.
    """
    start = min((i.started_at for i in instances), default=time.monotonic())  # launched maybe stages ago
    pending = {i.name: i for i in instances}
    ready: dict[str, float] = {}
    seen: dict[str, list[failure_lines.StartupLine]] = {}  # each instance's start-up failure lines so far
    last_read = -math.inf

    def said(name: str) -> str:
        return f": {failure_lines.startup_verdict(seen[name])}" if seen.get(name) else ""

    def all_ready() -> bool:
        nonlocal last_read
        for proc in watch:
            if not proc.alive():
                raise DeploymentError(f"{proc.name} (pid {proc.pid}) died while the instances were starting "
                                      f"({time.monotonic() - start:.0f} s in); its log:\n{proc.tail(20)}")
        # The logs are read every few seconds, not every second: each read is a `docker exec` per instance.
        read_logs = time.monotonic() - last_read >= STARTUP_READ_EVERY_S
        if read_logs:
            last_read = time.monotonic()
        for name, inst in list(pending.items()):
            if healthy(inst):
                ready[name] = time.monotonic() - start
                log.info(f"{name} ready on {inst.url} in {ready[name]:.0f} s",
                         extra={"phase": "instance ready", "instance": name, "seconds": round(ready[name], 1)})
                del pending[name]
                continue
            exited = not inst.process.alive()
            overdue = time.monotonic() - inst.started_at > inst.spec.ready_timeout_s
            if exited or overdue or read_logs:  # a verdict reads the log as it is now
                seen[name] = failure_lines.startup_failures(inst.process.log())
            if exited:
                raise DeploymentError(f"{name} exited before it became healthy ({time.monotonic() - start:.0f} s "
                                      f"after start){said(name)}; the last lines of its log:\n"
                                      f"{inst.process.tail(40)}")
            if any(f.final for f in seen.get(name, [])):
                raise DeploymentError(f"{name} cannot join the pool ({time.monotonic() - start:.0f} s after start)"
                                      f"{said(name)}; the last lines of its log:\n{inst.process.tail(20)}")
            if overdue:
                raise DeploymentError(f"{name} not healthy on {inst.url}/health after "
                                      f"{inst.spec.ready_timeout_s:.0f} s (instances[].ready_timeout_s){said(name)}; "
                                      f"the last lines of its log:\n{inst.process.tail(40)}")
        return not pending

    def still_waiting(elapsed_s: float) -> None:
        for name, inst in pending.items():
            so_far = f"; its log shows {failure_lines.startup_verdict(seen[name])}" if seen.get(name) else ""
            log.info(f"waiting for {name}: {elapsed_s:.0f} s, last log line: {inst.process.last_line()[:160]}{so_far}")

    # No overall timeout: each instance has its own ready_timeout_s, from its own start, and all_ready raises.
    wait_until(all_ready, timeout_s=math.inf, interval_s=1, progress=still_waiting,
               progress_every_s=PROGRESS_EVERY_S, since=start)
    return ready


def served_models(instance: RunningInstance) -> list[str]:
    r = requests.get(f"{instance.url}/v1/models", timeout=10)
    r.raise_for_status()
    return [m["id"] for m in r.json()["data"]]


def complete(instance: RunningInstance, model: str, prompt: str, max_tokens: int = 8,
             timeout: float = 120) -> requests.Response:
    """One greedy completion; the caller judges the status, so a 404 for a wrong model name reads as such."""
    return requests.post(f"{instance.url}/v1/completions", timeout=timeout,
                         json=completion_body(model, prompt, max_tokens))


def completion_body(model: str, prompt: str, max_tokens: int) -> dict:
    return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}


def metrics(instance: RunningInstance, timeout: float = 10) -> Metrics:
    r = requests.get(f"{instance.url}/metrics", timeout=timeout)
    r.raise_for_status()
    try:
        return Metrics.parse(r.text)
    except NotPrometheus as e:
        raise DeploymentError(str(e)) from None

