"""The correctness probe: KV read from the pool must give the greedy output that the same KV gives when read
from the instance's own prefix cache.

It runs after the seed's three timed steps, with prompts of its own (benchmark.correctness), one request in
flight at a time. Per prompt: cold on instance 1 (computes the KV; the connector stores it in the pool), then a
local hit on instance 1 (its own prefix cache). Once the pool's writes have landed: a pool hit on instance 2.

The verdict compares the pool hit with the local hit: the same KV bytes, the same compute shape (the uncached
suffix over the cached blocks) and a batch of one, so their greedy token ids must be equal. A cold prefill
against a hit is not like with like: vLLM is not batch-invariant and computes other shapes, and the near-tie
logits of a tiny model flip on the rounding. So cold against pool is a second opinion, tolerant as vLLM's
`check_logprobs_close`: at the first differing token each side's token must be among the other's top logprobs.
Last, a prompt never sent before goes to instance 2 and must not hit anything: the miss control, which shows
that the hit lengths the verdict relies on can say "no".

Hit lengths are the server's own count, `usage.prompt_tokens_details.cached_tokens` (tokens from the prefix
cache and from the connector; needs --enable-prompt-tokens-details), split into local and pool by the delta of
the instance's `vllm:prefix_cache_hits` counter, which is that request's alone as nothing else is in flight.
Never `prompt_logprobs` nor `echo` here: with them vLLM skips the prefix cache and the connector, and every
"hit" would silently be a cold run. Generation logprobs are fine; the token ids come from them
(`return_tokens_as_token_ids`), in vLLM 0.11 and 0.32 alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from harness.config import Correctness, Target
from harness.metrics import Metrics
from harness.progress import logger
from harness.waiting import wait_until

log = logger("probe")  # the correctness probe's progress: [probe] lines

LOCAL_HITS = "vllm:prefix_cache_hits"  # the instance's own prefix cache, in tokens
ROLES = ("cold", "local_hit", "pool_hit", "miss_control")


class ProbeError(Exception):
    """A probe request that did not answer properly: a deployment fault, not a verdict on the pool."""


@dataclass
class Answer:
    """One probe request, as the server answered it."""

    role: str
    instance: str
    token_ids: list[int]
    top: list[dict[int, float]]  # per generated token: the top logprobs by token id
    text: str
    prompt_tokens: int
    cached_tokens: int  # from the prefix cache and the connector together
    local_tokens: int  # from the instance's own prefix cache (its counter's delta)
    seconds: float

    @property
    def pool_tokens(self) -> int:
        return self.cached_tokens - self.local_tokens


def token_id(token: str) -> int:
    """`token_id:123` (return_tokens_as_token_ids) -> 123."""
    prefix, _, number = token.partition(":")
    if prefix != "token_id" or not number.lstrip("-").isdigit():
        raise ProbeError(f"token {token!r} is not in the token_id:N form (return_tokens_as_token_ids)")
    return int(number)


def parse_answer(role: str, instance: str, body: dict, local_tokens: int, seconds: float) -> Answer:
    """A non-streaming /v1/completions answer with logprobs and token ids into an Answer."""
    try:
        choice, usage = body["choices"][0], body["usage"]
        logprobs = choice["logprobs"]
        # With --enable-prompt-tokens-details (validation requires it), vLLM 0.11 sends the details as null when
        # nothing was cached (recorded); 0.32 always sends them.
        details = usage.get("prompt_tokens_details") or {}
        return Answer(role=role, instance=instance, token_ids=[token_id(t) for t in logprobs["tokens"]],
                      top=[{token_id(t): lp for t, lp in (d or {}).items()} for d in logprobs["top_logprobs"]],
                      text=choice["text"], prompt_tokens=int(usage["prompt_tokens"]),
                      cached_tokens=int(details.get("cached_tokens") or 0), local_tokens=local_tokens, seconds=seconds)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise ProbeError(f"{instance}: the {role} answer lacks {e!r}: {str(body)[:300]}") from None


def request_body(model: str, prompt: str, c: Correctness) -> dict:
    """A probe request: greedy, non-streaming, with the top logprobs of each token by token id."""
    return {"model": model, "prompt": prompt, "max_tokens": c.output_len, "temperature": 0, "ignore_eos": True,
            "logprobs": c.top_logprobs, "return_tokens_as_token_ids": True}


def ask(url: str, name: str, model: str, prompt: str, c: Correctness, role: str, timeout_s: float,
        metrics: Callable[[], Metrics]) -> Answer:
    """One greedy request with nothing else in flight, and how many of its tokens came from the local cache."""
    body = request_body(model, prompt, c)
    before = metrics().total(LOCAL_HITS)
    start = time.monotonic()
    try:
        r = requests.post(url.rstrip("/") + "/v1/completions", json=body, timeout=timeout_s)
    except requests.RequestException as e:
        raise ProbeError(f"{name}: the {role} request failed: {e}") from None
    seconds = time.monotonic() - start
    if r.status_code != 200:
        raise ProbeError(f"{name}: the {role} request answered {r.status_code}: {r.text[:300]}")
    try:
        answer = r.json()
    except ValueError:
        raise ProbeError(f"{name}: the {role} answer is not JSON: {r.text[:300]}") from None
    return parse_answer(role, name, answer, int(metrics().total(LOCAL_HITS) - before), seconds)


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two token sequences differ (a length difference counts), or None."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def closeness(cold: Answer, pool: Answer) -> dict[str, Any]:
    """check_logprobs_close for one prompt: equal, close (at the first difference each side's token is in the
    other's top logprobs; nothing after it is compared) or far."""
    p = first_difference(cold.token_ids, pool.token_ids)
    if p is None:
        return {"verdict": "equal", "position": None}
    if p >= min(len(cold.token_ids), len(pool.token_ids)):
        return {"verdict": "far", "position": p, "why": "the outputs have different lengths"}
    a, b = cold.token_ids[p], pool.token_ids[p]
    close = b in cold.top[p] and a in pool.top[p]
    return {"verdict": "close" if close else "far", "position": p, "cold_token": a, "pool_token": b,
            "pool_token_in_cold_top": b in cold.top[p], "cold_token_in_pool_top": a in pool.top[p]}


def inconclusive_reason(cold: Answer, local: Answer, pool: Answer) -> str | None:
    """Why this prompt's two hits cannot be compared as like with like, or None when they can."""
    if cold.cached_tokens:
        return (f"the cold request on {cold.instance} already had {cold.cached_tokens} cached tokens "
                f"({cold.pool_tokens} from the pool): the prompt was not new")
    if local.cached_tokens <= 0:
        return f"the local hit on {local.instance} had no cached tokens: its prefix cache did not keep the prompt"
    if pool.local_tokens:
        return (f"the pool hit on {pool.instance} took {pool.local_tokens} tokens from its own cache: it had "
                f"seen the prompt, so this is no pool hit")
    if pool.cached_tokens != local.cached_tokens:
        return (f"the pool hit on {pool.instance} had {pool.cached_tokens} cached tokens, the local hit on "
                f"{local.instance} {local.cached_tokens}: hits of different lengths compute different shapes")
    return None


@dataclass
class Verdict:
    """The probe's result, as results.json keeps it (`correctness`)."""

    num_prompts: int
    output_len: int
    top_logprobs: int
    prompts: list[dict[str, Any]] = field(default_factory=list)  # per prompt: verdict, hit lengths, outputs
    miss_control: dict[str, Any] | None = None
    seconds: float = 0.0

    def by(self, verdict: str) -> list[dict[str, Any]]:
        return [p for p in self.prompts if p["verdict"] == verdict]

    def cold_vs_pool(self, verdict: str) -> list[dict[str, Any]]:
        return [p for p in self.prompts if p.get("cold_vs_pool", {}).get("verdict") == verdict]

    def summary(self) -> dict[str, int]:
        return {"checked": len(self.by("equal")) + len(self.by("differs")), "equal": len(self.by("equal")),
                "differs": len(self.by("differs")), "inconclusive": len(self.by("inconclusive")),
                "cold_vs_pool_equal": len(self.cold_vs_pool("equal")),
                "cold_vs_pool_close": len(self.cold_vs_pool("close")),
                "cold_vs_pool_far": len(self.cold_vs_pool("far"))}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"summary": self.summary()}


def judge(index: int, cold: Answer, local: Answer, pool: Answer) -> dict[str, Any]:
    """One prompt: pool hit against local hit (the verdict), cold against pool (the second opinion)."""
    row: dict[str, Any] = {"index": index, "prompt_tokens": cold.prompt_tokens,
                           "cached_tokens": {a.role: a.cached_tokens for a in (cold, local, pool)},
                           "pool_tokens": {a.role: a.pool_tokens for a in (cold, local, pool)},
                           "seconds": {a.role: round(a.seconds, 3) for a in (cold, local, pool)}}
    reason = inconclusive_reason(cold, local, pool)
    if reason:
        return row | {"verdict": "inconclusive", "why": reason}
    p = first_difference(local.token_ids, pool.token_ids)
    row |= {"verdict": "equal" if p is None else "differs", "position": p, "cold_vs_pool": closeness(cold, pool)}
    if p is not None:
        row |= {"local_ids": local.token_ids, "pool_ids": pool.token_ids, "local_text": local.text,
                "pool_text": pool.text}
    return row


def wait_pool_settled(master_metrics: Callable[[], Metrics], quiet_s: float = 1.0,
                      timeout_s: float = 30.0, stuck_s: float = 3.0) -> float:
    """Wait until the pool has taken every write: as many puts ended as started, and its key count unchanged for
    quiet_s. The connector stores KV after a request's forward pass, in the background. A put whose client died
    never ends (the master discards it after --put_start_discard_timeout_sec, 30 s): nothing moving for stuck_s
    counts as settled too. Returns seconds waited; never raises (a pool hit that comes too early shows up as an
    inconclusive prompt, by its length)."""
    start = last_change = time.monotonic()
    seen = None

    def settled() -> bool:
        nonlocal seen, last_change
        m = master_metrics()
        state = tuple(m.total(name) for name in ("master_key_count", "master_batch_put_start_items",
                                                  "master_batch_put_end_items", "master_put_start_requests",
                                                  "master_put_end_requests"))
        if state != seen:
            seen, last_change = state, time.monotonic()
            return False
        quiet = time.monotonic() - last_change
        return (state[1] == state[2] and state[3] == state[4] and quiet >= quiet_s) or quiet >= stuck_s

    wait_until(settled, timeout_s=timeout_s, interval_s=0.2, since=start)
    return time.monotonic() - start


def run(target: Target, first, second, prompts: list[str], metrics: Callable[[object], Metrics],
        master_metrics: Callable[[], Metrics]) -> Verdict:
    """The probe over `prompts` (the last one is the miss control, sent only to `second`).
    `first`, `second`: running instances (name, url); `metrics(instance)` reads an instance's counters."""
    c = target.benchmark.correctness
    model, timeout = target.model.served_name, target.benchmark.request_timeout_s
    start = time.monotonic()
    *probed, fresh = prompts

    def to(inst, prompt: str, role: str) -> Answer:
        return ask(inst.url, inst.name, model, prompt, c, role, timeout, lambda: metrics(inst))

    cold, local = [], []
    for prompt in probed:
        cold.append(to(first, prompt, "cold"))
        local.append(to(first, prompt, "local_hit"))
    waited = wait_pool_settled(master_metrics)
    log.info(f"{len(probed)} prompts cold and local hit on {first.name}; pool settled after {waited:.1f} s")
    verdict = Verdict(num_prompts=len(probed), output_len=c.output_len, top_logprobs=c.top_logprobs)
    for i, prompt in enumerate(probed):
        verdict.prompts.append(judge(i, cold[i], local[i], to(second, prompt, "pool_hit")))
    miss = to(second, fresh, "miss_control")
    verdict.miss_control = {"instance": second.name, "prompt_tokens": miss.prompt_tokens,
                            "cached_tokens": miss.cached_tokens, "pool_tokens": miss.pool_tokens}
    verdict.seconds = time.monotonic() - start
    s = verdict.summary()
    log.info(f"pool hit = local hit on {s['equal']} of {s['checked']} ({s['inconclusive']} inconclusive); "
             f"cold vs pool: {s['cold_vs_pool_equal']} equal, {s['cold_vs_pool_close']} close, "
             f"{s['cold_vs_pool_far']} far; "
             f"miss control {miss.cached_tokens} cached tokens; {verdict.seconds:.1f} s")
    return verdict
