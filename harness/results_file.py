"""The run's results file, reports/<run>/results.json, as typed records: what each benchmark step measured and where
its KV came from (StepRecord), and the run around them (RunResults). RunResults.write is the one function that
writes the file and RunResults.read the one that reads it back (repeat, the self-tests); its JSON Schema,
docs/results.schema.json, is generated from these models (`python -m harness.results_file > docs/results.schema.json`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from harness.bench import StepResult
from harness.config import Target
from harness.evidence import Reading, ServedBy
from harness.metrics import Metrics
from harness.probe import Verdict
from harness.results import ComparisonRow, server_mean_ttft

SCHEMA_VERSION = 1
SCHEMA_FILE = "docs/results.schema.json"  # from the repository root


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a key the model does not know is an error, not ignored


class TtftStats(_Record):
    """TTFT of a step's successful requests, in seconds (harness.bench StepResult.stats)."""

    count: int = Field(description="requests sent")
    ok: int = Field(description="requests that streamed a first token and ended well")
    failed: int = Field(description="requests that failed or timed out (counted, never dropped)")
    mean: float | None = Field(description="mean TTFT (null: no successful request)")
    median: float | None = Field(description="median TTFT")
    p90: float | None = Field(description="90th percentile TTFT")
    p99: float | None = Field(description="99th percentile TTFT")
    min: float | None = Field(description="shortest TTFT")
    max: float | None = Field(description="longest TTFT")


class NodeNetwork(_Record):
    """With several nodes: what the step's instance's node received while the step ran (KV from other nodes)."""

    node: str = Field(description="the node the step's instance runs on")
    received_bytes: int = Field(description="bytes its network interfaces received during the step (/proc/net/dev)")


class StepRecord(_Record):
    """One benchmark step (cold, evict, local_hit, cross_instance_hit): its TTFTs and where its KV came from."""

    instance: str = Field(description="the instance the step's requests went to")
    client: str = Field(description="the load generator that sent them (benchmark.client)")
    stats: TtftStats = Field(description="TTFT statistics of the step, seconds")
    server_ttft_mean_s: float | None = Field(
        description="mean TTFT by vLLM's own histogram over the step (null: no count)")
    records: str = Field(description="file in the run's folder with one JSON line per request")
    evidence: dict[str, Metrics] = Field(
        description="per instance name and 'master': each metric's change over the step, summed over label sets")
    pool_evidence: list[Reading] = Field(description="one reading per declared evidence source (benchmark.evidence)")
    served_by: ServedBy = Field(description="which cache served the step, by its evidence sources")
    held_tokens_before: int | None = Field(
        description="tokens in KV blocks the instance held, idle, before the step (null: its gauges are missing)")
    node_network: NodeNetwork | None = Field(None, description="only with several nodes: bytes the node received")

    @model_serializer(mode="wrap")
    def _without_absent_node_network(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if self.node_network is None:
            data.pop("node_network", None)  # one node: the key is left out, as it always was
        return data

    @classmethod
    def measured(cls, result: StepResult, *, instance: str, client: str, records: str, evidence: dict[str, Metrics],
                 pool_evidence: list[Reading], served_by: ServedBy, held_tokens_before: int | None,
                 node_network: NodeNetwork | None = None) -> StepRecord:
        """The record of a step that ran: its statistics and the server's mean TTFT from what it measured."""
        return cls(instance=instance, client=client, stats=TtftStats.model_validate(result.stats()),
                   server_ttft_mean_s=server_mean_ttft(evidence.get(instance, Metrics())), records=records,
                   evidence=evidence, pool_evidence=pool_evidence, served_by=served_by,
                   held_tokens_before=held_tokens_before, node_network=node_network)


class MissControl(_Record):
    """The probe's prompt never sent before, on the peer instance: it must find nothing."""

    instance: str = Field(description="the instance it went to")
    prompt_tokens: int = Field(description="its length in tokens")
    cached_tokens: int = Field(description="tokens the server reported cached (must be 0)")
    pool_tokens: int = Field(description="of those, tokens not from the instance's own cache")


class ProbeSummary(_Record):
    """The probe's verdicts counted."""

    checked: int = Field(description="prompts compared (equal + differs)")
    equal: int = Field(description="pool hit gave the local hit's greedy tokens")
    differs: int = Field(description="pool hit gave other greedy tokens")
    inconclusive: int = Field(description="prompts whose hits could not be compared like with like")
    cold_vs_pool_equal: int = Field(description="second opinion: cold and pool hit equal")
    cold_vs_pool_close: int = Field(description="second opinion: different but within each other's top logprobs")
    cold_vs_pool_far: int = Field(description="second opinion: outside each other's top logprobs")


class CorrectnessRecord(_Record):
    """The correctness probe (harness/probe.py): pool hit against local hit, one request at a time."""

    num_prompts: int = Field(description="prompts probed (the miss control not counted)")
    output_len: int = Field(description="greedy tokens generated and compared per request")
    top_logprobs: int = Field(description="logprobs kept per token for the cold-vs-pool second opinion")
    prompts: list[dict[str, Any]] = Field(
        description="per prompt, as harness.probe.judge writes it: index, prompt_tokens, cached_tokens, pool_tokens, "
                    "seconds, verdict, and why / position, cold_vs_pool and the differing outputs where they apply")
    miss_control: MissControl | None = Field(description="the miss control (null: not run)")
    seconds: float = Field(description="wall time of the whole probe")
    summary: ProbeSummary = Field(description="the verdicts counted")

    @classmethod
    def of(cls, verdict: Verdict) -> CorrectnessRecord:
        return cls.model_validate(verdict.to_dict())


class NightRun(_Record):
    """An earlier run the baseline was made of (harness/nights.py)."""

    file: str = Field(description="its results.json, relative to the --history folder")
    started: float = Field(description="when it started, Unix seconds")


class NightSkipped(_Record):
    """A results.json of the --history folder that was not compared, and why."""

    file: str = Field(description="its path, relative to the --history folder")
    reason: str = Field(description="another target, other versions, another config, not before tonight, unreadable")


class NightFinding(_Record):
    """One of tonight's values against its baseline, the median of the same value in the baseline runs."""

    kind: Literal["step", "ratio"] = Field(description="a step's TTFT statistic, or a comparison's ratio")
    name: str = Field(description="the step (cold, local_hit, ...) or the comparison (local_hit_ttft_fraction, ...)")
    statistic: str = Field(description="the step's statistic (mean, median, p90) or the comparison's metric")
    tonight: float | None = Field(description="tonight's value: seconds for a step, the actual ratio for a ratio")
    baseline: float | None = Field(description="the median of the baseline runs' values (null: too few)")
    limit: float | None = Field(description="where a regression starts: baseline x (1 + fraction), or x (1 - "
                                            "fraction) for a ratio that must stay above its limit")
    runs: list[str] = Field(description="the baseline runs that measured the value, oldest first (their files)")
    values: list[float] = Field(description="their values, in the same order")
    verdict: Literal["pass", "regression", "not compared"] = Field(
        description="not compared: tonight or fewer than nights.min_runs baseline runs measured it")


class NightsRecord(_Record):
    """Tonight against the last nights (tests/acceptance/test_06_nights.py, --history)."""

    history: str = Field(description="the --history folder as given")
    runs: list[NightRun] = Field(description="the baseline: the last nights.runs comparable runs, oldest first")
    skipped: list[NightSkipped] = Field(description="results.json files of the folder that were not comparable")
    not_compared: str | None = Field(description="why nothing was compared (fewer comparable runs than "
                                                 "nights.min_runs); null: compared")
    findings: list[NightFinding] = Field(description="each step statistic and each ratio, judged")


class RunResults(_Record):
    """One acceptance run: reports/<run>/results.json."""

    schema_version: int = Field(SCHEMA_VERSION, description="this file's schema version")
    target: str = Field(description="the target's name")
    target_file: str = Field(description="the target's YAML file as the run resolved it")
    config_sha256: str = Field(description="sha256 of the validated target (its model as JSON, without its `nights`, "
                                           "`endurance` and `pool_cost` sections: tuning the comparison or an opt-in "
                                           "stage keeps the history it compares with)")
    started: float = Field(default_factory=time.time, description="when the run started, Unix seconds")
    finished: float | None = Field(None, description="when the file was written, Unix seconds")
    versions: dict[str, str] = Field(default_factory=dict, description="software in the container: name -> version")
    steps: dict[str, StepRecord] = Field(
        default_factory=dict, description="the benchmark steps that ran: cold, evict, local_hit, cross_instance_hit")
    comparisons: list[ComparisonRow] = Field(default_factory=list, description="thresholds and declared comparisons")
    correctness: CorrectnessRecord | None = Field(None, description="the correctness probe (null: not run)")
    transfer_failures: dict[str, list[str]] = Field(
        default_factory=dict, description="per instance: KV transfer failure lines in its log")
    timings: dict[str, float] = Field(default_factory=dict, description="bring-up phase or step -> wall seconds")
    nights: NightsRecord | None = Field(None, description="tonight against the last nights (only with --history)")

    @model_serializer(mode="wrap")
    def _without_absent_nights(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if self.nights is None:
            data.pop("nights", None)  # not compared: the key is left out, as it was before --history
        return data

    @classmethod
    def start(cls, target: Target, target_file: str) -> RunResults:
        return cls(target=target.name, target_file=target_file,
                   config_sha256=config_sha256(target))

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=2, sort_keys=True) + "\n"

    def write(self, path: Path) -> None:
        """results.json, stamped with the time it is written."""
        self.finished = time.time()
        path.write_text(self.to_json())

    @classmethod
    def read(cls, path: Path) -> RunResults:
        """A results.json read back and validated through the model that wrote it, strictly: a value of another JSON
        type than its schema's (a number written as a string) is refused, not converted."""
        return cls.model_validate(json.loads(path.read_text()), strict=True)


def config_sha256(target: Target) -> str:
    """The target's hash as results.json records it: the validated model as JSON without `nights`, `endurance` and
    `pool_cost` (tonight's tolerances, the opt-in stages' settings: none changes what the acceptance run measures), so
    a run before a section existed and a run after its values changed are still the same config."""
    return hashlib.sha256(target.model_dump_json(exclude={"nights", "endurance", "pool_cost"}).encode()).hexdigest()


def schema() -> dict[str, Any]:
    """results.json's JSON Schema, generated from RunResults (docs/results.schema.json is its committed copy)."""
    return RunResults.model_json_schema()


def schema_text() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_text())
