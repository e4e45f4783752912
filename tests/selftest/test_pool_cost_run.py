"""The pool-cost stage's negative controls (issue 26, item 4): the real stage (`pytest -m pool_cost`) on cpu-local, with
both bring-ups, made red for a reason it must name; nothing left behind. docs/pool-cost.md ("Its negative control").

1. A bound no real pool meets: pool_cost.max_slowdown -0.5 ("the pool makes a miss twice as fast"): both steps red,
   each naming its step, both medians and the bound.
2. A real slowdown of the pool-on run: a busy loop pinned to instance 1's core (cpu-local binds its OpenMP threads to
   core 0) while the pool-on run measures, stopped before the pool-off bring-up. The gate cannot tell a slow pool from
   any other slowness of the pool-on run, and must see this one at the target's own bound: the cold prefill shares its
   core, so it takes about twice as long.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest

from harness.config import ROOT

from .runner import TARGET, faulty_target, leftovers, run_suite

pytestmark = pytest.mark.kit

STAGE = "tests/pool_cost"
MODULE = "test_pool_cost::"
MISS, LOCAL_HIT = MODULE + "test_the_pool_does_not_slow_a_miss", MODULE + "test_the_pool_does_not_slow_a_local_hit"

# The plugin of control 2: the busy loop starts as the stage's runs begin and stops when the pool-off bring-up does.
HOG = '''
import pytest
from harness.deployment import Deployment
from harness.runtime import Process

hog = {}
_relaunch = Deployment.relaunch


def relaunch(self, target, suffix):
    hog.pop("process").stop()
    print("[control] the busy loop on core 0 stopped before the pool-off bring-up", flush=True)
    return _relaunch(self, target, suffix)


Deployment.relaunch = relaunch


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if fixturedef.argname == "runs":
        deployment = request.getfixturevalue("deployment")
        request.getfixturevalue("instances")
        hog["process"] = Process.start(deployment.container, "cpu-hog",
                                       ["taskset", "-c", "0", "python3", "-c", "while True: pass"])
        print("[control] a busy loop on core 0 (instance 1's) while the pool-on run measures", flush=True)
    yield
'''


@dataclass
class Control:
    name: str
    failing: tuple[str, ...]  # the tests that must fail
    fragments: tuple[str, ...]  # each required in each failing test's message
    pool_cost: dict
    plugin: str | None = None


CONTROLS = [
    Control("a bound no real pool meets", (MISS, LOCAL_HIT),
            ("pool_cost.max_slowdown: step", "with the pool", "without it", "more than the bound -50.0%",
             "(the pool on run came first)"), {"max_slowdown": -0.5}),
    Control("the pool-on run slowed by a busy loop on its core", (MISS,),
            ("pool_cost.max_slowdown: step 1 cold on instance-1", "more than the bound +25.0%"), {}, plugin=HOG),
]


def new_result(before: set[str]) -> dict:
    [new] = {p.name for p in (ROOT / "reports").glob(f"{TARGET.name}-*")} - before
    return json.loads((ROOT / "reports" / new / "pool_cost.json").read_text())


@pytest.mark.parametrize("control", CONTROLS, ids=[c.name for c in CONTROLS])
def test_pool_cost_control(control: Control, tmp_path):
    target = faulty_target(tmp_path, lambda data: data.update(pool_cost=control.pool_cost))
    env, extra = None, []
    if control.plugin:
        (tmp_path / "inject_fault.py").write_text(control.plugin)
        env, extra = {**os.environ, "PYTHONPATH": str(tmp_path)}, ["-p", "inject_fault"]
    before = {p.name for p in (ROOT / "reports").glob(f"{TARGET.name}-*")}
    run = run_suite(tmp_path, f"--target={target}", *extra, STAGE, mark="pool_cost", timeout=1500, env=env)
    failing = run.failing()
    print(f"POOL COST CONTROL {control.name} | rc {run.rc} | {run.seconds:.0f} s | failing {sorted(failing)}")
    for test, message in failing.items():
        print(f"  {test}: {message.splitlines()[0][:400]}")
    assert run.rc == 1 and set(control.failing) <= set(failing), (failing, run.output[-3000:])
    for test in control.failing:
        for fragment in control.fragments:
            assert fragment in failing[test], (fragment, failing[test])
    result = new_result(before)
    assert set(result["runs"]) == {"pool on", "pool off"} and result["first"] == "pool on"
    assert all("slowdown" in result["verdicts"][s] for s in ("cold", "local_hit")), result["verdicts"]
    assert leftovers() == []
