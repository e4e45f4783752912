"""What the resilience stage does to a running deployment and what it reads meanwhile: the master restarted,
an instance killed as a crash kills it, then started again; requests sent one at a time with their own timeout.

The stage runs after the deployment fixtures brought everything up (tests/resilience/), on the session's
Deployment (harness/deployment.py): a restarted master or instance takes the old one's place there and is owned as
the first one was (stopped at the end of the session under --attach, ended with its container otherwise, kept with
--keep-deployment).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness import bench, mooncake, serving
from harness.config import Target
from harness.deployment import Deployment
from harness.metrics import Metrics
from harness.runtime import Process

MASTER_KEYS = "master_key_count"
# Keys the master evicted to make room (Mooncake 0.3.13 and 0.3.7.post2 both count them).
MASTER_EVICTIONS = ("master_evicted_key_count", "master_successful_evictions")


@dataclass
class Live:
    """The deployment as the resilience stage changes it: the session's Deployment, whose master and instances it
    restarts in place."""

    deployment: Deployment

    @property
    def target(self) -> Target:
        return self.deployment.target

    @property
    def master(self) -> Process:
        return self.deployment.master

    @property
    def instances(self) -> list[serving.RunningInstance]:
        return self.deployment.instances

    def instance(self, role: str) -> serving.RunningInstance:
        return serving.in_role(self.target, self.instances, role)

    def master_metrics(self) -> Metrics:
        return mooncake.master_metrics(self.target)

    def restart_master(self) -> float:
        """Stop the master (SIGTERM, then SIGKILL) and start a new one with the same command; seconds it took."""
        return self.deployment.restart_master()

    def restart(self, inst: serving.RunningInstance) -> serving.RunningInstance:
        """Launch a dead instance again in place (same spec, its own new log); wait_ready says when it serves."""
        return self.deployment.restart_instance(inst)


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
