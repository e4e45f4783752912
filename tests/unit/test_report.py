"""The reporting layer without Allure's CLI: properties escaping, category regexes as Allure matches them,
the TTFT chart's PNG, the tables' numbers, and reading history back from a single-file report."""

from __future__ import annotations

import base64
import json
import re
import struct

import pytest

from harness import report
from harness.bench import RequestRecord, StepResult
from harness.config import ROOT
from harness.report import (
    CATEGORIES,
    ReportError,
    allure_report,
    embedded_history,
    environment_properties,
    executor,
    main,
    ttft_chart_png,
    ttft_table,
    ttft_table_html,
    write_categories,
    write_environment,
)

# --- environment.properties ----------------------------------------------------------------------------------------


def test_properties_sorted_one_line_each():
    assert environment_properties({"target": "cpu-local", "image": "vllm:1"}) == "image=vllm\\:1\ntarget=cpu-local\n"


@pytest.mark.parametrize("value, escaped", [
    ("a=b:c#d!e", "a\\=b\\:c\\#d\\!e"),
    ("C:\\models\\q", "C\\:\\\\models\\\\q"),
    ("two words", "two words"),  # inner spaces of a value stay literal
    ("  lead", "\\  lead"),  # a leading space would be trimmed by the reader
    ("a\nb\tc\rd\fe", "a\\nb\\tc\\rd\\fe"),
    ("5 µs, 中", "5 \\u00B5s, \\u4E2D"),
    ("😀", "\\uD83D\\uDE00"),  # outside the BMP: a UTF-16 surrogate pair, as Java writes it
])
def test_property_values_escaped_as_java_writes_them(value, escaped):
    assert environment_properties({"k": value}) == f"k={escaped}\n"


def test_property_keys_escape_spaces_too():
    assert environment_properties({"NPU driver #1": "x"}) == "NPU\\ driver\\ \\#1=x\n"


def test_write_environment(tmp_path):
    write_environment(tmp_path / "results", {"vllm": "0.11.0rc2", "model": "/models/Qwen2.5-72B"})
    assert (tmp_path / "results" / "environment.properties").read_text() == (
        "model=/models/Qwen2.5-72B\nvllm=0.11.0rc2\n")


# --- categories ----------------------------------------------------------------------------------------------------


def allure_categories(status: str, message: str) -> list[str]:
    """Categories as Allure 2 assigns them: every category whose statuses include status and whose regex
    matches the whole message, compiled with DOTALL (CategoriesPlugin.matches)."""
    return [c["name"] for c in CATEGORIES
            if status in c["matchedStatuses"] and re.fullmatch(c["messageRegex"], message, re.DOTALL)]


REGRESSION, ENVIRONMENT, DEPLOYMENT, SUITE = (c["name"] for c in CATEGORIES)


@pytest.mark.parametrize("status, message, expected", [
    ("failed", "AssertionError: step 3 (cross-instance hit on instance-2): mean TTFT 3480 ms = 0.52 x cold 6690 ms, "
     "expected < 0.45 (thresholds.cross_instance_ttft_fraction); instance-2 external (pool) prefix-cache hits +35840 "
     "tokens\nassert 0.52 < 0.45", [REGRESSION]),
    ("failed", "AssertionError: step 2 (local hit on instance-1): mean TTFT 900 ms = 0.61 x cold 1480 ms, expected < "
     "0.5 (thresholds.local_hit_ttft_fraction): the instance's prefix cache did not speed up the repeat", [REGRESSION]),
    ("failed", "AssertionError: device 5: link DOWN, expected UP\nassert 'DOWN' == 'UP'\n  \n  - UP\n  + DOWN",
     [ENVIRONMENT]),
    ("failed", "device 12: net health Init, expected Success", [ENVIRONMENT]),
    ("failed", "AssertionError: /etc/hccn.conf not found in the container", [ENVIRONMENT]),
    ("failed", "Failed: deployment: the master did not answer /health within 60 s", [DEPLOYMENT]),
    # The prefix names the kind, whatever the log tail says.
    ("broken", "RuntimeError: deployment: instance-2 exited during start-up (exit code 1); log tail:\n"
     "ERROR hccn.conf not found", [DEPLOYMENT]),
    ("failed", "Failed: deployment: instance-1 exited; log tail:\nHCCL: check hccn.conf", [DEPLOYMENT]),
    ("broken", "harness.runtime.DeploymentError: deployment: port 50088 is taken", [DEPLOYMENT]),
    ("broken", "KeyError: 'mean'", [SUITE]),
    ("broken", "TypeError: bad operand\nwhile comparing thresholds.local_hit_ttft_fraction", [SUITE]),
    ("broken", "AttributeError: 'NoneType' object has no attribute 'device 5:'", [SUITE]),
    # Other failed checks stay in Allure's own "Product defects".
    ("failed", "AssertionError: container kvpool: /dev/shm is 64 MB, expected 20 GB", []),
    ("failed", "AssertionError: instance-1: /health answered 503 after device 5: reset", []),
    ("failed", "AssertionError: the run mentions deployment: but does not start with it", []),
    ("passed", "AssertionError: device 5: link DOWN", []),
])
def test_each_message_lands_in_one_category(status, message, expected):
    assert allure_categories(status, message) == expected


def test_categories_json_is_allures_shape(tmp_path):
    write_categories(tmp_path)
    written = json.loads((tmp_path / "categories.json").read_text())
    assert [c["name"] for c in written] == ["Product regressions (thresholds)", "Environment faults (NPU network)",
                                            "Deployment faults", "Suite bugs"]
    for c in written:
        assert set(c) == {"name", "matchedStatuses", "messageRegex"}
        assert c["messageRegex"].isascii()  # Java and Python then agree on every class in it


# --- chart ---------------------------------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


STEPS = {"step 1 cold": [6.2, 6.9, 7.1, 6.5], "step 2 local hit": [1.2, 1.5, 1.4],
         "step 3 cross-instance hit": [1.0, 1.1]}


def test_chart_is_a_1000_by_500_png():
    limits = {"step 2 local hit": 0.5 * 6.675, "step 3 cross-instance hit": 0.45 * 6.675}
    assert png_size(ttft_chart_png(STEPS, "cpu-local TTFT", limits)) == (1000, 500)


def test_chart_is_deterministic():
    limits = {"step 2 local hit": 3.0}
    assert ttft_chart_png(STEPS, "t", limits) == ttft_chart_png(STEPS, "t", limits)


@pytest.mark.parametrize("steps", [
    {"step 1 cold": [6.0, 7.0], "step 2 local hit": [], "step 3 cross-instance hit": [1.0]},
    {"step 1 cold": [], "step 2 local hit": []},  # no data at all, nor a cold mean for the limit's label
    {},
])
def test_chart_with_steps_without_successful_requests(steps):
    limits = {name: 2.0 for name in steps}
    assert png_size(ttft_chart_png(steps, "t", limits)) == (1000, 500)


# --- tables --------------------------------------------------------------------------------------------------------


def step(name: str, ttfts: list[float], failed: int = 0) -> StepResult:
    records = [RequestRecord(index=i, send_time=0.0, ttft_s=t, latency_s=t + 1, output_text="x", output_tokens=1,
                             status="ok") for i, t in enumerate(ttfts)]
    records += [RequestRecord(index=len(ttfts) + i, send_time=0.0, ttft_s=None, latency_s=30.0, output_text="",
                              output_tokens=0, status="timeout", error="read timed out") for i in range(failed)]
    return StepResult(name=name, records=records)


STATS = {s.name: s.stats() for s in (
    step("step 1 cold", [1.0, 2.0, 3.0, 4.0]),
    step("step 2 local hit", [0.5, 0.5, 0.5], failed=1),
    step("step 3 fast", [0.0123, 0.0125]),
    step("step 4 down", [], failed=2),
)}


def test_text_table_numbers_in_ms():
    assert ttft_table(STATS, "step 1 cold") == (
        "TTFT in ms over the successful requests; mean/cold: mean over the mean of step 1 cold\n"
        "step              ok/failed  mean  median   p90   p99   min   max  mean/cold\n"
        "----------------  ---------  ----  ------  ----  ----  ----  ----  ---------\n"
        "step 1 cold             4/0  2500    2500  3700  3970  1000  4000       1.00\n"
        "step 2 local hit        3/1   500     500   500   500   500   500       0.20\n"
        "step 3 fast             2/0  12.4    12.4  12.5  12.5  12.3  12.5       0.00\n"
        "step 4 down             0/2     -       -     -     -     -     -          -\n")


def test_text_table_names_the_cache_that_served_each_step():
    served = {"step 1 cold": "neither", "step 2 local hit": "pool"}
    lines = ttft_table(STATS, "step 1 cold", served).splitlines()
    assert lines[1].split()[-2:] == ["served", "by"]
    assert [line.split()[-1] for line in lines[3:]] == ["neither", "pool", "-", "-"]


def test_no_ratio_without_a_cold_mean():
    stats = {"step 1 cold": STATS["step 4 down"], "step 2 local hit": STATS["step 2 local hit"]}
    assert [line.split()[-1] for line in ttft_table(stats, "step 1 cold").splitlines()[3:]] == ["-", "-"]


def test_html_table_same_rows_escaped():
    page = ttft_table_html({**STATS, "<b>step</b>": STATS["step 1 cold"]}, "step 1 cold")
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    assert re.findall(r"<th>(.*?)</th>", rows[0]) == ["step", "ok/failed", "mean", "median", "p90", "p99", "min",
                                                      "max", "mean/cold"]
    assert re.findall(r"<td>(.*?)</td>", rows[2]) == ["step 2 local hit", "3/1", "500", "500", "500", "500", "500",
                                                      "500", "0.20"]
    assert "<td>&lt;b&gt;step&lt;/b&gt;</td>" in page and "<b>" not in page


# --- the HTML report -----------------------------------------------------------------------------------------------


def test_history_read_back_from_a_single_file_report():
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    page = (f"<script>Promise.allSettled([d('data/suites.json','{b64('[]')}'),"
            f"d('history/history.json','{b64('{}')}'),d('history/history-trend.json','{b64('[{}]')}'),])</script>")
    assert embedded_history(page) == {"history.json": b"{}", "history-trend.json": b"[{}]"}


def test_report_without_results_says_how_to_get_them(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    with pytest.raises(ReportError, match=r"no Allure results in .*results .*--alluredir="):
        allure_report(tmp_path / "results", tmp_path / "out", tmp_path / "history")
    assert main(["--results", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 1
    assert "report: error: no Allure results" in capsys.readouterr().err


def test_executor_links_the_jenkins_build_or_names_the_host():
    jenkins = {"JENKINS_URL": "https://ci.example/", "BUILD_URL": "https://ci.example/job/kvpool-nightly/42/",
               "BUILD_NUMBER": "42", "JOB_NAME": "kvpool-nightly"}
    e = executor(jenkins, "agent-7")
    assert e["type"] == "jenkins" and e["buildName"] == "kvpool-nightly #42" and e["buildOrder"] == 42
    assert e["buildUrl"] == jenkins["BUILD_URL"] and e["reportUrl"] == "https://ci.example/job/kvpool-nightly/42/Allure/"
    local = executor({"USER": "ops"}, "atlas-01")
    assert local == {"name": "atlas-01", "type": "local", "buildName": "ops@atlas-01",
                     "reportName": "KV pool acceptance"}


def test_the_executors_link_is_the_page_the_jenkinsfile_publishes():
    jenkinsfile = (ROOT / "Jenkinsfile").read_text()
    names = re.findall(r"publishHTML\(target: \[reportName: '([^']+)'", jenkinsfile)
    assert names == [report.JENKINS_REPORT_NAME]
