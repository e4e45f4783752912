"""What the resilience stage does to a running deployment and what it reads meanwhile: the master restarted,
an instance killed as a crash kills it, then started again; requests sent one at a time with their own timeout.

The stage runs after the deployment fixtures brought everything up (tests/resilience/). Every process started
here has an owner: a restarted master is stopped by `Live.owner` at the end of the stage; a restarted instance
takes the place of the old one in the session's instance list, whose teardown stops it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

from harness import bench, mooncake, serving
from harness.config import Target
from harness.metrics import Metrics
from harness.runtime import Container, Process

MASTER_KEYS = "master_key_count"
# Keys the master evicted to make room (Mooncake 0.3.13 and 0.3.7.post2 both count them).
MASTER_EVICTIONS = ("master_evicted_key_count", "master_successful_evictions")


@dataclass
class Live:
    """The deployment as the resilience stage changes it: the current master and instances."""

    target: Target
    container: Container
    master: Process
    instances: list[serving.RunningInstance]
    owner: ExitStack = field(default_factory=ExitStack)
    restarts: int = 0

    def instance(self, role: str) -> serving.RunningInstance:
        return serving.in_role(self.target, self.instances, role)

    def master_metrics(self) -> Metrics:
        return mooncake.master_metrics(self.target)

    def restart_master(self, say: Callable[[str], None] = print) -> float:
        """Stop the master (SIGTERM, then SIGKILL) and start a new one with the same command; seconds it took."""
        start = time.monotonic()
        self.master.stop()
        self.restarts += 1
        self.master = self.owner.enter_context(
            mooncake.start_master(self.container, self.target, say, name=f"mooncake-master-restart{self.restarts}"))
        return time.monotonic() - start

    def restart(self, inst: serving.RunningInstance, say: Callable[[str], None] = print) -> serving.RunningInstance:
        """Launch a dead instance again in place (same spec, its own new log); wait_ready says when it serves."""
        if inst.process.alive():
            raise RuntimeError(f"{inst.name} is still running (pid {inst.process.pid}); kill it first")
        self.restarts += 1
        new = serving.start_instance(inst.process.container, self.target, inst.spec,  # in its own node's container
                                     log_name=f"{inst.name}-restart{self.restarts}")
        inst.process, inst.started_at = new.process, new.started_at
        say(f"{inst.name} launched again (pid {inst.process.pid})")
        return inst

    def close(self) -> None:
        self.owner.close()


def send_alone(inst: serving.RunningInstance, target: Target, prompt: str, timeout_s: float) -> bench.RequestRecord:
    """One streamed request with nothing else in flight: TTFT, cached tokens, or the failure's kind. Never raises
    for the request (bench.run_step); a hang ends at timeout_s as status "timeout"."""
    return bench.run_step(inst.url, target.model.served_name, [prompt], output_len=target.benchmark.output_len,
                          concurrency=1, timeout_s=timeout_s, name="resilience").records[0]


def evicted(before: Metrics, after: Metrics) -> float:
    """Keys the master evicted between two readings of its metrics."""
    return max(after.total(n) - before.total(n) for n in MASTER_EVICTIONS)


# vLLM 0.32's scheduler when a KV load from the pool fails under kv_transfer_config.kv_load_failure_policy "fail"
# (its default): the request ends with HTTP 500. "recompute" would compute the KV instead.
LOAD_FAILURE = re.compile(r"Failing (\d+) request\(s\) due to KV load failure \(failure_policy=(\w+)")


def load_failure_cause(log: str) -> str:
    """Why an instance failed requests, from its log: vLLM's KV-load-failure line, or that it gave none."""
    lines = LOAD_FAILURE.findall(log)
    if not lines:
        return "no KV-load-failure line in its log"
    policy = lines[-1][1]
    return (f"vLLM failed {sum(int(n) for n, _ in lines)} request(s) on a KV load failure from the pool "
            f"(kv_load_failure_policy={policy}" + ("; 'recompute' computes the KV instead" if policy == "fail" else "")
            + ")")
