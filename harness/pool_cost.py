"""The pool's own cost (the opt-in pool-cost stage, tests/pool_cost/): the same cold and local-hit steps on the same
instance with the pool on (the target as it is) and off (the same instances without kv_transfer_config), and the gate
"the pool does not make a miss or a local hit slower than without it by more than pool_cost.max_slowdown".

Pure: the pool-off target, whether two runs' step can be compared, and the gate. A step's comparison is refused
(NotComparable), not judged, when the two runs did not do the same work in it: a failed request, a cold step that found
cached tokens, or a repeat that the instance's own prefix cache did not serve, or served other lengths than in the other
run (on a pool target without a prefix cache the repeat is a pool hit with the pool on and a miss with it off: nothing
to compare; its cold step still is).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from harness.bench import StepResult
from harness.config import Target
from harness.names import COLD, LOCAL_HIT, STEP_LABELS

POOL_ON, POOL_OFF = "pool on", "pool off"
STEPS = (COLD, LOCAL_HIT)
LABELS = {COLD: "cold", LOCAL_HIT: "local hit"}


class NotComparable(Exception):
    """The two runs did not do the same work: their TTFTs say nothing of the pool's cost."""


def pool_off(target: Target) -> Target:
    """The same target with no instance in the pool: every instance's kv_transfer_config removed, nothing else (its
    args, env, ports and cores as they are). A target whose instances use no pool has nothing to compare."""
    if all(x.kv_transfer_config is None for x in target.instances):
        raise NotComparable(f"no instance of {target.name} has a kv_transfer_config: it runs without the pool already")
    return target.model_copy(update={"instances": [x.model_copy(update={"kv_transfer_config": None})
                                                   for x in target.instances]})


@dataclass
class Run:
    """One bring-up's measurement on one instance: each step's requests over every round, in order (the same prompts
    in the same order in both runs), and the tokens its own prefix cache served during each step (vllm:prefix_cache_hits
    over the step)."""

    label: str  # POOL_ON or POOL_OFF
    instance: str
    steps: dict[str, StepResult]
    own_cache_tokens: dict[str, float]

    def median(self, step: str) -> float:
        return self.steps[step].stats()["median"]

    def to_dict(self) -> dict:
        return {"label": self.label, "instance": self.instance,
                "steps": {s: {"stats": r.stats(), "own_cache_tokens": self.own_cache_tokens[s],
                              "cached_tokens": [x.cached_tokens for x in r.records]} for s, r in self.steps.items()}}


def _problems(run: Run, step: str) -> list[str]:
    """Why one run's step cannot be compared at all: failed requests; a cold step that was not cold; a repeat that was
    not a local hit (by its own cached_tokens and the instance's prefix-cache counter)."""
    out, r = [], run.steps[step]
    if r.failures:
        f = r.failures[0]
        out.append(f"{len(r.failures)} of {len(r.records)} requests of the {LABELS[step]} step failed, first: "
                   f"{f.status} {f.error}")
    cold, hit = run.steps[COLD].ok, run.steps[LOCAL_HIT].ok
    if hit and all(x.cached_tokens is None for x in hit):
        # vLLM 0.11 leaves the field out when it is 0, so a cold None reads as 0 once the repeat shows the field.
        return out + ["no request reported usage.prompt_tokens_details.cached_tokens: the instance needs "
                      "--enable-prompt-tokens-details, without which no step can be shown cold or a local hit"]
    if step == COLD:
        warm = [x for x in cold if x.cached_tokens]
        if warm:
            out.append(f"{len(warm)} of {len(cold)} requests of the cold step found cached tokens (first: request "
                       f"{warm[0].index}, {warm[0].cached_tokens}): it was not cold")
        return out
    missed = [x for x in hit if not x.cached_tokens]
    if missed:
        out.append(f"{len(missed)} of {len(hit)} repeated requests found no cached tokens (first: request "
                   f"{missed[0].index}): the repeat was not a hit; is the instance's prefix cache on "
                   "(--enable-prefix-caching)?")
    cached = sum(x.cached_tokens or 0 for x in hit)
    own = run.own_cache_tokens[LOCAL_HIT]
    if cached and own < cached:
        out.append(f"the instance's own prefix cache served {own:.0f} of the repeat's {cached} cached tokens: the rest "
                   "came from the pool, so the repeat was not a local hit; a round must fit in the instance's KV "
                   "cache (fewer pool_cost.num_prompts)")
    return out


def check_comparable(on: Run, off: Run, step: str) -> None:
    """Raise NotComparable, saying every reason, unless both runs did the same work in `step`: its requests all ok,
    the cold step cold; the repeat a local hit served by the instance's own prefix cache, each repeated request's hit
    as long with the pool as without it. Each step on its own: a target without a prefix cache still has a cold
    step to compare."""
    said = [f"{r.label} on {r.instance}: {p}" for r in (on, off) for p in _problems(r, step)]
    if on.instance != off.instance:
        said.append(f"the pool-on run measured {on.instance}, the pool-off run {off.instance}")
    a, b = on.steps[step].records, off.steps[step].records
    if len(a) != len(b):
        said.append(f"the {LABELS[step]} step sent {len(a)} requests with the pool and {len(b)} without it")
    elif step == LOCAL_HIT and not said:
        other = [(x, y) for x, y in zip(a, b) if (x.cached_tokens or 0) != (y.cached_tokens or 0)]
        if other:
            x, y = other[0]
            said.append(f"{len(other)} of {len(a)} repeated requests hit other lengths with and without the pool "
                        f"(first: request {x.index}, {x.cached_tokens} cached tokens with it, {y.cached_tokens} "
                        "without): the two repeats did not save the same prefill")
    if said:
        raise NotComparable("; ".join(said))


@dataclass(frozen=True)
class Verdict:
    """One step's gate: median TTFT with the pool over without it, less 1, against pool_cost.max_slowdown."""

    step: str
    instance: str
    with_pool_s: float
    without_pool_s: float
    slowdown: float
    bound: float
    first: str  # which run came first: POOL_ON or POOL_OFF
    ok: bool

    @property
    def message(self) -> str:
        how = "within" if self.ok else "more than"
        return (f"pool_cost.max_slowdown: {STEP_LABELS[self.step]} on {self.instance}: median TTFT "
                f"{self.with_pool_s:.3f} s with the pool, {self.without_pool_s:.3f} s without it: "
                f"{self.slowdown:+.1%}, {how} the bound {self.bound:+.1%} (the {self.first} run came first)")

    def to_dict(self) -> dict:
        return {**asdict(self), "message": self.message}


def judge(on: Run, off: Run, step: str, max_slowdown: float, first: str = POOL_ON) -> Verdict:
    """One step's verdict, once check_comparable has passed for it."""
    a, b = on.median(step), off.median(step)
    slowdown = a / b - 1
    return Verdict(step, on.instance, a, b, slowdown, max_slowdown, first, slowdown <= max_slowdown)
