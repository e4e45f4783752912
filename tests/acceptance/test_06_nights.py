"""Stage 6, tonight against the last nights (--history DIR; harness/nights.py).

After stage 5, each step's TTFT statistics (the target's nights.statistics) and each comparison's ratio of tonight's
run are compared with the median of the same value in the last nights.runs runs of the same target, versions and
config found in the --history folder. A value worse than its baseline by more than the target's tolerance
(nights.ttft_slower_fraction, nights.ratio_worse_fraction) fails this test, naming the step or ratio, tonight's value,
the baseline and the runs it came from; the comparison goes into results.json (`nights`) and a chart of each ratio
across the nights into the run's folder (nights.png) and the report. A module of its own, so that a slow night is a
verdict of its own beside stage 5's thresholds, and stage 5's tests and their ids stay as they were.
"""

from __future__ import annotations

import allure
import pytest

from harness import nights, report

pytestmark = [pytest.mark.acceptance, allure.parent_suite("acceptance"), allure.suite("6 nights"),
              allure.feature("6 nights")]


def test_tonight_against_the_last_nights(request, target, history):
    if history is None:
        pytest.skip("no --history DIR: tonight is compared with the last nights only when given a folder of earlier "
                    "runs' results.json files (the Jenkinsfile passes the previous builds')")
    if not any(item.get_closest_marker("kv_pool") for item in request.session.items):
        pytest.skip("stage 5 is not in this session, so tonight measured no step to compare")
    run_results = request.getfixturevalue("run_results")  # stage 5 made it: no bring-up here
    if not run_results.steps:
        pytest.skip("stage 5 measured no step tonight (its tests say why), so there is nothing to compare")
    record = nights.compare(run_results, history, target.nights, request.config.getoption("history"))
    run_results.nights = record
    said = nights.summary(record)
    print(said, end="")
    allure.attach(said, "tonight against the last nights", allure.attachment_type.TEXT)
    if record.not_compared:
        pytest.skip(f"nights not compared: {record.not_compared}")
    png = report.nights_chart_png(record, run_results.started, f"{target.name}: ratios across nights")
    (request.getfixturevalue("run_dir") / "nights.png").write_bytes(png)
    allure.attach(png, "ratios across nights", allure.attachment_type.PNG)
    worse = nights.regressions(record)
    if worse:
        pytest.fail(f"nights: {len(worse)} value(s) regressed against the last nights (--history "
                    f"{record.history}): " + "; ".join(nights.describe(f, record) for f in worse), pytrace=False)
