"""What the KV connector says about each request: its per-request pool-hit line, parsed.

vllm-ascend 0.11's MooncakeConnectorStoreV1 (the seed's) logs on the scheduler side, once per request:
    Reqid: <id>, Total tokens N, mooncake hit tokens: H, need to load: L
and vLLM 0.32's MooncakeStoreConnector the same with `kvpool hit tokens`. L is 0 when the instance's own
prefix cache already holds the hit. Not used by the acceptance tests (yet).
"""

from __future__ import annotations

import re

HIT_LINE = re.compile(
    r"Reqid: (?P<request>.+?), Total tokens (?P<total>\d+), (?:mooncake|kvpool) hit tokens: (?P<hit>\d+), "
    r"need to load: (?P<need_to_load>\d+)")


def hits(log_text: str) -> list[dict]:
    """Every per-request hit line of a log, in order: {request, total, hit, need_to_load}."""
    return [{"request": m["request"], "total": int(m["total"]), "hit": int(m["hit"]),
             "need_to_load": int(m["need_to_load"])}
            for m in HIT_LINE.finditer(log_text)]
