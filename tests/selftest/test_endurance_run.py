"""The endurance stage's negative controls (issue 26, item 2): the real stage (`pytest -m endurance`) on cpu-local for a
short duration, one fault injected mid-run, and the gate that fault concerns red with a message naming the cause;
nothing left behind. docs/faults.md lists them ("The endurance stage's controls").

The short runs shrink the warm-up and the drift windows (SHORT) so that 3 min hold both; the fault's own bound is the
target's (the stall bound, the error budget, the probes' verdict), never loosened or tightened for the control. A
fault mid-run is injected by a plugin loaded into the run under test: once the stage's instances serve (the traffic
starts right after), a thread waits AFTER_S and acts on the session's Deployment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from harness.config import ROOT, load_target

from .runner import TARGET, faulty_target, leftovers, run_suite

pytestmark = pytest.mark.kit

STAGE = "tests/endurance"
DURATION = "180s"
SHORT = {"warmup_s": 30, "drift_window_s": 45, "interval_s": 5, "probe_every_s": 20}
AFTER_S = 50  # into the traffic: past the warm-up, with a drift window before it
STALL_S = load_target("cpu-local").endurance.stall_s
PAUSE_S = STALL_S + 20  # longer than the stall bound, and over before the traffic ends
MODULE = "test_endurance::"

# The plugin: {action} is the body of act(deployment), run in a thread AFTER_S after the instances serve.
INJECT = '''
import threading, time
import pytest
from harness.runtime import signal_group


def act(deployment):
    time.sleep({after})
{action}


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if fixturedef.argname == "endurance_run":
        deployment = request.getfixturevalue("deployment")
        request.getfixturevalue("instances")
        threading.Thread(target=act, args=(deployment,), daemon=True).start()
    yield
'''

PAUSE_MASTER = f'''
    m = deployment.master
    print(f"[control] SIGSTOP to the master (pid {{m.pid}}) for {PAUSE_S:g} s", flush=True)
    m.container.exec(signal_group("STOP", m.pid))
    time.sleep({PAUSE_S})
    m.container.exec(signal_group("CONT", m.pid))
    print("[control] SIGCONT to the master", flush=True)
'''

RESTART_MASTER = '''
    print("[control] restarting the master", flush=True)
    deployment.restart_master()
'''


@dataclass
class Control:
    name: str
    failing: str  # the gate's test that must fail
    fragments: tuple[str, ...]  # each required in its message
    action: str | None = None  # the plugin's body; None: the fault is in the target
    change: Callable[[dict], None] | None = None


def wrong_kv(data: dict) -> None:
    # The same fault as test_faults.py's "instance 2 loads other weights under the same path": its pool keys match
    # instance 1's, the KV it reads from the pool was computed by other weights.
    data["instances"][1]["args"] = TARGET.instances[1].args + ["--load-format", "dummy"]


CONTROLS = [
    Control("master paused longer than the stall bound", "test_no_stall",
            ("endurance.stall_s", "requests in flight and no first token", "the master's /metrics did not answer"),
            action=PAUSE_MASTER),
    Control("master restarted mid-run", "test_failed_requests_within_the_error_budget",
            ("endurance.max_failed_per_1000", "over the budget from failure", "master"), action=RESTART_MASTER),
    Control("instance 2 with wrong KV", "test_probes_under_load_give_the_local_hits_tokens",
            ("endurance.probe_accept", "gave other greedy tokens from the pool than from the local cache"),
            change=wrong_kv),
]


def new_series(before: set[str]) -> dict:
    [new] = {p.name for p in (ROOT / "reports").glob(f"{TARGET.name}-*")} - before
    return json.loads((ROOT / "reports" / new / "endurance.json").read_text())


@pytest.mark.parametrize("control", CONTROLS, ids=[c.name for c in CONTROLS])
def test_endurance_control(control: Control, tmp_path):
    def change(data: dict) -> None:
        data["endurance"] = SHORT
        if control.change:
            control.change(data)

    target = faulty_target(tmp_path, change)
    env, extra = None, []
    if control.action:
        (tmp_path / "inject_fault.py").write_text(INJECT.format(after=AFTER_S, action=control.action))
        env, extra = {**os.environ, "PYTHONPATH": str(tmp_path)}, ["-p", "inject_fault"]
    before = {p.name for p in (ROOT / "reports").glob(f"{TARGET.name}-*")}
    run = run_suite(tmp_path, f"--target={target}", f"--duration={DURATION}", *extra, STAGE, mark="endurance",
                    timeout=1200, env=env)
    failing = run.failing()
    print(f"ENDURANCE CONTROL {control.name} | rc {run.rc} | {run.seconds:.0f} s | failing {sorted(failing)}")
    for test, message in failing.items():
        print(f"  {test}: {message.splitlines()[0][:400]}")
    assert run.rc == 1 and MODULE + control.failing in failing, (failing, run.output[-3000:])
    for fragment in control.fragments:
        assert fragment in failing[MODULE + control.failing], (fragment, failing[MODULE + control.failing])
    series = new_series(before)
    assert series["requests"] > 0 and series["intervals"], "the run recorded no series"
    assert leftovers() == []
