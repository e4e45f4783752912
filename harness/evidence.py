"""Where a step's KV came from: the instance's own prefix cache or the pool, read from every source the target
declares (benchmark.evidence), so a verdict never hangs on one metric that a version may not have.

Sources, and the versions that have them:
- external_hits: vLLM's `vllm:external_prefix_cache_hits` counter (tokens the connector loaded). vLLM 0.32 has
  it; 0.11.0 (the seed's) has no external counters at all.
- cached_tokens: the per-request `usage.prompt_tokens_details.cached_tokens` (local and connector tokens
  together; needs --enable-prompt-tokens-details), less the instance's `vllm:prefix_cache_hits`. vLLM 0.11 and
  0.32; 0.11 leaves the field out when it is 0.
- master_gets: keys the master handed out during the step (`master_batch_get_replica_list_items` in 0.3.13),
  or where it does not count keys (0.3.7.post2) its batch lookups (`master_batch_get_replica_list_requests`), with
  single gets (`master_get_replica_list_requests`) and less failures. Mooncake 0.3.7.post2 lists a counter only
  once it moved, so an absent counter is 0.
- connector_log: the connector's per-request line (harness.connector_log), `need to load` summed, each request
  once. vllm-ascend 0.11 logs it at INFO at every lookup; vLLM 0.32's MooncakeStoreConnector only at DEBUG;
  vllm-ascend 0.23's AscendStoreConnector at INFO on a hit only, so there a step without a line loaded 0 tokens.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harness import connector_log
from harness.metrics import Metrics

SOURCES = ("external_hits", "cached_tokens", "master_gets", "connector_log")
EXTERNAL_HITS = "vllm:external_prefix_cache_hits"
LOCAL_HITS = "vllm:prefix_cache_hits"
MASTER_GET_ITEMS, MASTER_BATCH_GETS = "master_batch_get_replica_list_items", "master_batch_get_replica_list_requests"
MASTER_GET_FAILURES = ("master_batch_get_replica_list_failures", "master_get_replica_list_failures")
KV_USAGE, CACHE_CONFIG = "vllm:kv_cache_usage_perc", "vllm:cache_config_info"


ServedBy = Literal["pool", "own prefix cache", "both", "neither"]


class Reading(BaseModel):
    """One evidence source's reading of a step (results.json: a step's `pool_evidence`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(description="the source read (benchmark.evidence): " + ", ".join(SOURCES))
    present: bool = Field(description="false: the source does not exist in this version or deployment")
    pool: float = Field(description="how much came from the pool during the step, in `unit`")
    unit: Literal["tokens", "keys", "lookups"] = Field("tokens", description="what `pool` counts")
    detail: str = Field("", description="how the reading was made, or why the source is absent")


def local_tokens(instance_evidence: Metrics) -> float:
    """Tokens served by the instance's own prefix cache during the step."""
    return instance_evidence.total(LOCAL_HITS)


def _whole(value: str | None) -> int | None:
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


def held_tokens(metrics: Metrics) -> int | None:
    """Tokens in the KV blocks an instance holds, from its /metrics: kv_cache_usage_perc of its usable blocks (all
    but vLLM's null block; num_gpu_blocks is a label of cache_config_info) times the block size. Read while no request
    is in flight, these are blocks no eviction can free: a connector still saving them, or one that never gave them
    back. None when a gauge is missing."""
    usage, info = metrics.series(KV_USAGE), metrics.series(CACHE_CONFIG)
    labels = info[0].labels if info else {}
    blocks, size = _whole(labels.get("num_gpu_blocks")), _whole(labels.get("block_size"))
    if not usage or blocks is None or size is None:
        return None
    return round(usage[0].value * (blocks - 1)) * size


def read(source: str, instance_evidence: Metrics, master_evidence: Metrics, cached_tokens: list[int | None] | None,
         log_text: str, *, logs_every_lookup: bool = True) -> Reading:
    """One source's reading for a step: instance_evidence and master_evidence are counter deltas over the step
    (results.step_evidence), cached_tokens the step's per-request counts (None: the load generator does not report
    them), log_text what the instance logged meanwhile, logs_every_lookup whether its connector logs a line for a
    lookup that finds nothing (connector_log.logs_every_lookup)."""
    if source == "external_hits":
        present = instance_evidence.has(EXTERNAL_HITS)
        return Reading(source=source, present=present, pool=instance_evidence.total(EXTERNAL_HITS),
                       detail="" if present else f"/metrics has no {EXTERNAL_HITS}_total (vLLM 0.11 has none)")
    if source == "cached_tokens":
        if cached_tokens is None:
            return Reading(source=source, present=False, pool=0,
                           detail="the load generator does not report per-request usage (vllm bench serve keeps no "
                                  "cached_tokens)")
        cached = sum(c or 0 for c in cached_tokens)
        local = local_tokens(instance_evidence)
        return Reading(source=source, present=True, pool=cached - local,
                       detail=f"{cached:.0f} cached, {local:.0f} of them local")
    if source == "master_gets":
        # Keys where the master counts them (0.3.13's batch items); else lookups (0.3.7.post2 counts batch
        # requests only: one per vLLM request).
        items = master_evidence.has(MASTER_GET_ITEMS)
        names, unit = ((MASTER_GET_ITEMS, "master_get_replica_list_requests"), "keys") if items else (
            (MASTER_BATCH_GETS, "master_get_replica_list_requests"), "lookups")
        gets = sum(master_evidence.total(n) for n in names)
        failed = sum(master_evidence.total(n) for n in MASTER_GET_FAILURES)
        return Reading(source=source, present=True, pool=gets - failed, unit=unit,
                       detail=f"{gets:.0f} {unit}, {failed:.0f} failed")
    if source == "connector_log":
        lines = connector_log.hits(log_text)
        loaded = connector_log.loaded_tokens(lines)
        requests = len({h["request"] for h in lines})
        if lines:
            detail = f"{len(lines)} per-request lines" + (f" of {requests} requests" if requests < len(lines) else "")
        elif logs_every_lookup:
            detail = "no per-request 'Reqid: ..., hit tokens: ...' line in the instance's log during the step"
        else:  # vllm-ascend 0.23: no line is no hit (pool_scheduler.py:547-548)
            detail = "no per-request hit line: this connector logs one only when the pool hits"
        return Reading(source=source, present=bool(lines) or not logs_every_lookup, pool=loaded, detail=detail)
    raise ValueError(f"unknown evidence source {source!r}; known: {', '.join(SOURCES)}")


def describe(readings: list[Reading], local: float) -> str:
    """One line: what the instance's own cache served, and what each source says came from the pool."""
    def one(r: Reading) -> str:
        amount = f"+{r.pool:.0f} {r.unit}" if r.present else "absent"
        return f"{r.source} {amount}" + (f" ({r.detail})" if r.detail else "")

    return f"own prefix cache {local:.0f} tokens; from the pool: " + "; ".join(map(one, readings))


def served_by(readings: list[Reading], local: float) -> ServedBy:
    """Which cache served a step, by its sources: "pool", "own prefix cache", "both" or "neither"."""
    pool = any(r.present and r.pool > 0 for r in readings)
    return {(True, True): "both", (True, False): "pool", (False, True): "own prefix cache",
            (False, False): "neither"}[(pool, local > 0)]
