"""The pool-cost stage (opt-in: `pytest -m pool_cost`, `tox -e pool-cost`): the pool's own cost. A second bring-up, so
a weekly job rather than a nightly one on the Atlas.

The deployment is brought up as the acceptance suite brings it up (the pool on). On the first instance of
benchmark.roles, pool_cost.rounds rounds of fresh prompts (pool_cost.num_prompts, default one wave of
benchmark.concurrency) are each sent cold and then again (a local hit), by the suite's own client at
benchmark.concurrency. Then the instances are stopped and the same instances started without kv_transfer_config (the
pool off; the master stays, idle, so both runs have the same processes beside the instances), and the same rounds of
the same prompts are sent again. The pool-on run always comes first.

Before judging a step, the two runs must have done the same work in it (harness/pool_cost.py check_comparable): else
its test errors in its set-up, saying why, instead of a red gate. Then each step is a test: median TTFT with the pool /
without it - 1 <= pool_cost.max_slowdown. Both runs' statistics and the verdicts go to reports/<run>/pool_cost.json
and the Allure report.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import allure
import pytest

from fixtures.deployment import bring_up
from harness import bench, report, results, serving
from harness import evidence as kv_evidence
from harness.deployment import Deployment
from harness.names import COLD, LOCAL_HIT, STEP_LABELS
from harness.pool_cost import (
    LABELS,
    POOL_OFF,
    POOL_ON,
    STEPS,
    NotComparable,
    Run,
    Verdict,
    check_comparable,
    judge,
    pool_off,
)
from harness.progress import logger

pytestmark = [pytest.mark.pool_cost, allure.parent_suite("pool cost"), allure.suite("8 pool cost"),
              allure.feature("8 pool cost")]

log = logger("pool-cost")


def first_instance(deployment: Deployment) -> serving.RunningInstance:
    """benchmark.roles' first instance (steps 1 and 2 of stage 5), among the instances running now."""
    t = deployment.target
    name = t.benchmark.roles.first or t.instances[0].name
    return next(i for i in deployment.instances if i.name == name)


def own_cache_tokens(before, after) -> float:
    return kv_evidence.local_tokens(results.step_evidence(before, after, results.INSTANCE_EVIDENCE))


def measure(deployment: Deployment, label: str, rounds: list[list[str]]) -> Run:
    """Every round on the first instance: its prompts cold, then again; a short completion first, so that neither
    run's cold step pays the instance's first request."""
    t, inst = deployment.target, first_instance(deployment)
    b, steps, own = t.benchmark, {s: bench.StepResult(name=s) for s in STEPS}, dict.fromkeys(STEPS, 0.0)
    serving.complete(inst, t.model.served_name, serving.CHECK_PROMPT, serving.CHECK_MAX_TOKENS)
    for k, prompts in enumerate(rounds):
        for step in STEPS:
            before = serving.metrics(inst)
            r = bench.run_step(inst.url, t.model.served_name, prompts, output_len=b.output_len,
                               concurrency=b.concurrency, timeout_s=b.request_timeout_s, name=step)
            own[step] += own_cache_tokens(before, serving.metrics(inst))
            # One index per prompt over the rounds, so a message's "request N" is one prompt of one round.
            steps[step].records += [dataclasses.replace(x, index=k * len(prompts) + x.index) for x in r.records]
            s = r.stats()
            log.info(f"{label}, round {k + 1} of {len(rounds)}, {LABELS[step]} on {inst.name}: median TTFT "
                     f"{s['median'] or 0:.3f} s, {s['ok']} ok / {s['failed']} failed")
    return Run(label, inst.name, steps, own)


def attach(run_dir: Path, on: Run, off: Run) -> None:
    ttfts = {f"{LABELS[s]}, {r.label}": r.steps[s].ttfts() for s in STEPS for r in (on, off)}
    png = report.ttft_chart_png(ttfts, "TTFT with the pool and without it")
    (run_dir / "pool_cost.png").write_bytes(png)
    allure.attach(png, "TTFT with the pool and without it", allure.attachment_type.PNG)
    rows = [f"{'step':<12}{'run':<10}{'ok':>5}{'median s':>10}{'mean s':>10}{'p90 s':>10}{'own cache tokens':>18}"]
    for s in STEPS:
        for r in (on, off):
            st = r.steps[s].stats()
            rows.append(f"{LABELS[s]:<12}{r.label:<10}{st['ok']:>5}{st['median'] or 0:>10.3f}{st['mean'] or 0:>10.3f}"
                        f"{st['p90'] or 0:>10.3f}{r.own_cache_tokens[s]:>18.0f}")
    allure.attach("\n".join(rows) + "\n", "TTFT table, pool on and off", allure.attachment_type.TEXT)


@pytest.fixture(scope="module")
def runs(deployment: Deployment, instances, run_dir: Path) -> dict:
    """Both runs, once for both steps, and each step's verdict or the reason it cannot be compared, written to
    reports/<run>/pool_cost.json."""
    t, pc = deployment.target, deployment.target.pool_cost
    try:
        off_target = pool_off(t)
    except NotComparable as e:
        pytest.fail(f"pool cost: the runs cannot be compared: {e}", pytrace=False)
    n = pc.prompts_per_round(t.benchmark)
    tokenize = bench.tokenize_via(first_instance(deployment).url, t.model.served_name)
    prompts = bench.make_dataset(tokenize, num_prompts=n * pc.rounds, input_len=t.benchmark.input_len, seed=pc.seed)
    rounds = [prompts[k * n:(k + 1) * n] for k in range(pc.rounds)]
    on = measure(deployment, POOL_ON, rounds)
    with bring_up("the instances without the pool"):
        deployment.relaunch(off_target, "pool-off")
        deployment.wait_ready()
    off = measure(deployment, POOL_OFF, rounds)
    attach(run_dir, on, off)
    judged: dict[str, Verdict | str] = {}
    for step in STEPS:
        try:
            check_comparable(on, off, step)
            judged[step] = judge(on, off, step, pc.max_slowdown, first=POOL_ON)
            log.info(("green " if judged[step].ok else "RED ") + judged[step].message)
        except NotComparable as e:
            judged[step] = str(e)
            log.info(f"{LABELS[step]}: not comparable: {e}")
    (run_dir / "pool_cost.json").write_text(json.dumps(
        {"target": t.name, "pool_cost": pc.model_dump(), "first": POOL_ON,
         "runs": {r.label: r.to_dict() for r in (on, off)},
         "verdicts": {s: v.to_dict() if isinstance(v, Verdict) else {"not_comparable": v} for s, v in judged.items()}},
        indent=1, default=str) + "\n")
    return judged


def verdict(runs: dict, step: str) -> Verdict:
    """The step's verdict; a step the two runs cannot be compared in errors here (in the test's set-up), saying why:
    it is no verdict on the pool."""
    v = runs[step]
    if not isinstance(v, Verdict):
        pytest.fail(f"pool cost: {STEP_LABELS[step]} cannot be compared with and without the pool: {v}", pytrace=False)
    allure.attach(json.dumps(v.to_dict(), indent=1), f"{LABELS[step]}: verdict", allure.attachment_type.JSON)
    return v


@pytest.fixture
def cold(runs) -> Verdict:
    return verdict(runs, COLD)


@pytest.fixture
def local_hit(runs) -> Verdict:
    return verdict(runs, LOCAL_HIT)


def test_the_pool_does_not_slow_a_miss(cold):
    assert cold.ok, cold.message


def test_the_pool_does_not_slow_a_local_hit(local_hit):
    assert local_hit.ok, local_hit.message
