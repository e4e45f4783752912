"""What the KV connector says about each request: its per-request pool-hit line, parsed.

vllm-ascend 0.11's MooncakeConnectorStoreV1 (the seed's) logs on the scheduler side, at every lookup:
    Reqid: <id>, Total tokens N, mooncake hit tokens: H, need to load: L
vLLM 0.32's MooncakeStoreConnector the same with `kvpool hit tokens`, at DEBUG. L is 0 when the instance's own
prefix cache already holds the hit.

vllm-ascend 0.23's AscendStoreConnector logs the `kvpool` line only when its lookup hits (pool_scheduler.py:559-565):
no line when the pool has none of the prompt (:547-548) nor when the local cache covers it (:536-537). When L > 0 a
second line follows, `KV pool load spec created req=... need_to_allocate=L ...` (:580-589), which is not a hit line
and is not counted. So on 0.23 a step without a line loaded nothing from the pool; on 0.11 it would mean the
connector never looked (`logs_every_lookup`).

A request the scheduler could not place in one step is looked up again at the next (vLLM's scheduler) and logs its
line again: `loaded_tokens` counts each request once, by its last line.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from harness import ascend_store

if TYPE_CHECKING:
    from harness.config import Instance, Target

HIT_LINE = re.compile(
    r"Reqid: (?P<request>.+?), Total tokens (?P<total>\d+), (?:mooncake|kvpool) hit tokens: (?P<hit>\d+), "
    r"need to load: (?P<need_to_load>\d+)")


def hits(log_text: str) -> list[dict]:
    """Every per-request hit line of a log, in order: {request, total, hit, need_to_load}."""
    return [{"request": m["request"], "total": int(m["total"]), "hit": int(m["hit"]),
             "need_to_load": int(m["need_to_load"])}
            for m in HIT_LINE.finditer(log_text)]


def loaded_tokens(lines: list[dict]) -> int:
    """Tokens to load from the pool, each request counted once: its last line is the lookup its load follows."""
    last = {h["request"]: h["need_to_load"] for h in lines}
    return sum(last.values())


def logs_every_lookup(target: Target, x: Instance) -> bool:
    """Whether the instance's connector logs a line for a lookup that finds nothing: all but vllm-ascend 0.23's."""
    return not ascend_store.runs_ascend_store(target, x)
