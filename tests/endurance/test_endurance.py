"""The endurance stage (opt-in: `pytest -m endurance`, `tox -e endurance -- --duration 10m`): what breaks after an
hour. The deployment is brought up as the acceptance suite brings it up, then sustained traffic at the target's
concurrency runs against both instances for --duration (harness/endurance_traffic.py): misses, local hits,
cross-instance hits and conversations whose prefix grows turn by turn, with a correctness probe every
endurance.probe_every_s. Every interval gives a row of the series and a progress line on the console.

Then each gate is a test of its own (harness/endurance.py), so that a red says which: the error budget, no stall,
memory growth after the warm-up, TTFT p99 drift, every probe under load equal. Each red names the first moment it
happened and the evidence around it. The series goes to reports/<run>/endurance.json, its charts to the run's folder
and the Allure report.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import allure
import pytest

from harness import endurance_charts, endurance_traffic
from harness.deployment import Deployment
from harness.progress import logger, shown_live

pytestmark = [pytest.mark.endurance, allure.parent_suite("endurance"), allure.suite("7 endurance"),
              allure.feature("7 endurance")]


log = logger("endurance")


def live(request: pytest.FixtureRequest) -> AbstractContextManager:
    """The [endurance] lines on the console as they happen, whether pytest captures output or not (through its
    terminal reporter): a 1 h run is never silent."""
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    if terminal is None:
        return nullcontext()  # no terminal reporter: the lines go to the standard output, as every area's do
    return shown_live("endurance", lambda line: terminal.write_line(line, flush=True))


@pytest.fixture(scope="module")
def endurance_run(request: pytest.FixtureRequest, deployment: Deployment, instances, duration_s: float,
                  run_dir: Path) -> tuple[endurance_traffic.Series, dict]:
    """The traffic for the duration, once for every gate; the series and the gates' verdicts written to
    reports/<run>/endurance.json, the charts to the run's folder and the report."""
    if len(instances) < 2:
        pytest.skip("the endurance stage needs two instances")
    t = deployment.target
    with live(request):
        series = endurance_traffic.Run(deployment, duration_s).run()
        gates = endurance_traffic.judge(series, t.endurance)
        for g in gates.values():
            log.info(("green " if g.ok else "RED ") + g.message)
    (run_dir / "endurance.json").write_text(json.dumps(
        {"target": t.name, "endurance": t.endurance.model_dump(), **series.to_dict(),
         "gates": {name: g.to_dict() for name, g in gates.items()}}, indent=1, default=str) + "\n")
    for name, png in endurance_charts.charts(series.intervals, t.name, t.endurance.warmup_s).items():
        (run_dir / name).write_bytes(png)
        allure.attach(png, name.removesuffix(".png"), allure.attachment_type.PNG)
    allure.attach(json.dumps([x.to_dict() for x in series.intervals], indent=1), "the series, a row per interval",
                  allure.attachment_type.JSON)
    return series, gates


def judged(endurance_run, name: str):
    _, gates = endurance_run
    g = gates[name]
    allure.attach(json.dumps(g.to_dict(), indent=1, default=str), f"{name}: evidence", allure.attachment_type.JSON)
    return g


def test_failed_requests_within_the_error_budget(endurance_run):
    g = judged(endurance_run, "error budget")
    assert g.ok, g.message


def test_no_stall(endurance_run):
    g = judged(endurance_run, "no stall")
    assert g.ok, g.message


def test_memory_level_after_warm_up(endurance_run):
    g = judged(endurance_run, "memory growth")
    assert g.ok, g.message


def test_ttft_p99_does_not_drift(endurance_run):
    g = judged(endurance_run, "TTFT p99 drift")
    assert g.ok, g.message


def test_probes_under_load_give_the_local_hits_tokens(endurance_run):
    g = judged(endurance_run, "probes equal")
    assert g.ok, g.message
