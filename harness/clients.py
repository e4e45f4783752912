"""The load generator of the timed steps (benchmark.client, or --client for one run), all run from the host:

- ours: harness/bench.py, in this process;
- aisbench: the seed's recommended benchmark (harness/aisbench.py), from its cache venv;
- vllm-bench: `vllm bench serve` (harness/vllm_bench.py), from a venv of the target's vLLM version.

Whichever ran, a step is a bench.StepResult of per-request records, so evidence, thresholds and reports do not
change with it. The venvs are installed on the first use (kit/clients.py, whose prepare() returns a
LoadGenerator), so only a run that asks pays for them.
"""

from __future__ import annotations

import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from harness import aisbench, bench, vllm_bench
from harness.config import Target
from harness.hostrun import ClientError

CLIENTS = ("ours", "aisbench", "vllm-bench")
WORK = "clients"  # a run's load-generator folder, under the run's folder: one folder per step in it


def tokenizer_copy(work: Path, instance_name: str) -> Path:
    """Where the model's tokenizer files are copied out of an instance's container when the host has no model folder."""
    return work / f"tokenizer-{instance_name}"


@dataclass
class LoadGenerator:
    name: str
    target: Target
    venv: Path | None  # None for ours
    work: Path  # where a run's inputs, outputs and log go, one folder per step

    @property
    def reports_cached_tokens(self) -> bool:
        """Whether its records carry usage.prompt_tokens_details.cached_tokens (the cached_tokens evidence)."""
        return self.name != "vllm-bench"

    def run_step(self, instance, prompts: list[str], step: str) -> bench.StepResult:
        b = self.target.benchmark
        served = self.target.model.served_name
        if self.name == "ours":
            return bench.run_step(instance.url, served, prompts, output_len=b.output_len, concurrency=b.concurrency,
                                  timeout_s=b.request_timeout_s, name=step)
        tokenizer = self.tokenizer(instance)
        run = aisbench.run_step if self.name == "aisbench" else vllm_bench.run_step
        # Their failures (aisbench.AisbenchError, vllm_bench.VllmBenchError, hostrun.Overdue) are ClientErrors.
        return run(self.venv, self.work / step, instance.url, served, str(tokenizer), prompts,
                   output_len=b.output_len, concurrency=b.concurrency, timeout_s=b.request_timeout_s, name=step)

    def tokenizer(self, instance) -> Path:
        """The model's tokenizer on the host: the model folder through the container's volumes, else its small
        files (tokenizer, vocabulary, configs; never the weights) copied out of the container once."""
        host = self.target.host_model_path(instance.spec)
        if host is not None and host.is_dir():
            return host
        model = self.target.model_path(instance.spec).rstrip("/")
        copy = tokenizer_copy(self.work, instance.name)
        if (copy / "config.json").is_file():
            return copy
        container = instance.process.container
        listed = container.exec(["ls", "-1", model])
        names = [n for n in listed.output.split() if TOKENIZER_FILES.fullmatch(n)] if listed.rc == 0 else []
        if "config.json" not in names or not any(n.startswith(("tokenizer", "vocab")) for n in names):
            raise ClientError(f"{self.name} needs the model's tokenizer on the host: {model} is in no "
                              "container.volumes entry, and in the container it has no config.json and tokenizer "
                              f"files to copy (ls: rc {listed.rc}, {listed.output.strip()[:200]!r})")
        for n in names:
            container.copy_out(f"{model}/{n}", copy)
        return copy


# What a client's tokenizer needs of a model folder: HF tokenizer and config files, not the weights.
TOKENIZER_FILES = re.compile(r"(tokenizer.*|vocab.*|merges\.txt|special_tokens_map\.json|added_tokens\.json|"
                             r"config\.json|generation_config\.json|.*\.tiktoken)")


def unavailable(name: str, target: Target, machine: str | None = None, python: tuple[int, int] | None = None
                ) -> str | None:
    """Why the load generator `name` cannot install on this host for `target`, or None. aisbench installs from
    targets/aisbench/requirements.lock, which pins CPU torch for CPython 3.11 on x86_64 (there is no such wheel for
    aarch64, where Atlas hosts are); `vllm bench serve` from a venv of the target's own vLLM lock, which only a kit
    target (container.build) has."""
    machine = machine or platform.machine()
    python = python or sys.version_info[:2]
    if name == "aisbench" and (machine != "x86_64" or python != (3, 11)):
        return (f"aisbench installs from targets/aisbench/requirements.lock, pinned for CPython 3.11 on x86_64 "
                f"(CPU torch); this host is {machine} with Python {python[0]}.{python[1]}: use --client ours")
    if name == "vllm-bench" and target.container.build is None:
        return (f"vllm-bench runs `vllm bench serve` from a venv of the target's vLLM lock, which only a target built "
                f"here (container.build) has; {target.name} brings its image: use --client ours")
    return None
