"""The reporting layer without Allure's CLI: properties escaping, category regexes as Allure matches them,
the TTFT chart's PNG, the tables' numbers, and reading history back from a single-file report."""

from __future__ import annotations

import base64
import io
import json
import re
import struct

import numpy as np
import pytest

from commands.report import main
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
    ttft_chart_png,
    ttft_table,
    ttft_table_html,
    write_categories,
    write_environment,
)
from harness.results_file import TtftStats

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


NAVY, CRIMSON = (0, 0, 128), (220, 20, 60)  # the mean's diamond, the limit's dashes (matplotlib's named colours)


def decoded(png: bytes) -> np.ndarray:
    """The PNG's pixels as rows x columns x (r, g, b) in 0-255, read back by the chart's own library (Pillow)."""
    from matplotlib import image

    return np.round(image.imread(io.BytesIO(png), format="png")[..., :3] * 255).astype(int)


def chart_problems(png: bytes, means_ms: dict[int, float | None], limits_ms: dict[int, float], top_ms: float,
                   steps: int) -> list[str]:
    """What a decoded chart lacks: the axes frame (black spines), the mean's navy diamond at (x, mean) for each step
    with data and none over a step without, the crimson dashes at each limit over its step only. Positions come from
    the frame found in the pixels and the axis limits the chart must use: x from 0.4 to steps + 0.6, y from 0 to
    top_ms x 1.12. Nothing here calls the chart's code."""
    rgb = decoded(png)
    black = (rgb == 0).all(axis=2)
    rows = np.nonzero(black.sum(axis=1) > rgb.shape[1] // 2)[0]  # the spines: black across half the image or more
    cols = np.nonzero(black.sum(axis=0) > rgb.shape[0] // 2)[0]
    if len(rows) < 2 or len(cols) < 2:
        return [f"no axes frame: {len(rows)} black rows and {len(cols)} black columns across the image"]
    top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]

    def col(x: float) -> float:
        return left + (x - 0.4) / (steps + 0.2) * (right - left)

    def row(ms: float) -> float:
        return bottom - ms / (top_ms * 1.12) * (bottom - top)

    def pixels(colour, x0: float, x1: float, y0: float = 0, y1: float = 1e9):
        band = (rgb[int(max(y0, 0)):int(y1) + 1, int(x0):int(x1) + 1] == colour).all(axis=2)
        ys, xs = np.nonzero(band)
        return ys + int(max(y0, 0)), xs + int(x0)

    problems = []
    for x, mean in means_ms.items():
        ys, _ = pixels(NAVY, col(x) - 5, col(x) + 5)  # the diamond is ~9 px wide; its label starts 0.25 further right
        if mean is None:
            if len(ys):
                problems.append(f"step {x}: {len(ys)} navy pixels where no mean should be")
        elif len(ys) < 20 or abs(ys.mean() - row(mean)) > 2:
            found = f"centred on row {ys.mean():.1f}" if len(ys) else "none"
            problems.append(f"step {x}: mean {mean} ms belongs on row {row(mean):.1f}; navy pixels: {len(ys)}, {found}")
    for x in means_ms:
        x0, x1 = col(x - 0.4), col(x + 0.4)
        if x in limits_ms:
            _, xs = pixels(CRIMSON, x0, x1, row(limits_ms[x]) - 1, row(limits_ms[x]) + 1)
            if len(set(xs)) < 0.4 * (x1 - x0):  # dashes: about half the columns
                problems.append(f"step {x}: limit {limits_ms[x]} ms: crimson in {len(set(xs))} of {x1 - x0:.0f} "
                                f"columns of row {row(limits_ms[x]):.1f}")
        elif len(pixels(CRIMSON, x0, x1)[0]):
            problems.append(f"step {x}: crimson where no limit is")
    return problems


STEPS = {"step 1 cold": [6.2, 6.9, 7.1, 6.5], "step 2 local hit": [1.2, 1.5, 1.4],
         "step 3 cross-instance hit": [1.0, 1.1]}
# By hand: means 26.7 / 4 = 6.675 s, 4.1 / 3 = 1.3667 s, 2.1 / 2 = 1.05 s; cold 6.675 s, so limits
# 0.5 x 6.675 = 3.3375 s and 0.45 x 6.675 = 3.00375 s; the tallest mark is the 7.1 s request: y runs to 7100 ms x 1.12.
LIMITS = {"step 2 local hit": 0.5 * 6.675, "step 3 cross-instance hit": 0.45 * 6.675}
MEANS_MS = {1: 6675.0, 2: 1366.7, 3: 1050.0}
LIMITS_MS = {2: 3337.5, 3: 3003.75}


def test_chart_is_a_1000_by_500_png_with_each_mean_and_limit_where_its_value_is():
    png = ttft_chart_png(STEPS, "cpu-local TTFT", LIMITS)
    assert png_size(png) == (1000, 500)
    assert chart_problems(png, MEANS_MS, LIMITS_MS, top_ms=7100, steps=3) == []


def blank_chart() -> bytes:
    from matplotlib.figure import Figure

    buf = io.BytesIO()
    Figure(figsize=(10, 5), dpi=100).savefig(buf, format="png")
    return buf.getvalue()


@pytest.mark.parametrize("chart", [
    blank_chart,  # a white 1000x500 PNG: the size check alone passed it
    lambda: ttft_chart_png(dict(zip(STEPS, reversed(list(STEPS.values())))), "t", LIMITS),  # the steps' data swapped
    lambda: ttft_chart_png(STEPS, "t", {"step 2 local hit": 3.0, "step 3 cross-instance hit": 3.0}),  # other limits
    lambda: ttft_chart_png(STEPS, "t", {}),  # no limits drawn
], ids=["blank", "steps-swapped", "wrong-limits", "no-limits"])
def test_negative_control_a_blank_or_wrong_chart_fails_the_check(chart):
    png = chart()
    assert png_size(png) == (1000, 500)  # what the old check looked at
    assert chart_problems(png, MEANS_MS, LIMITS_MS, top_ms=7100, steps=3)


def test_chart_is_deterministic():
    limits = {"step 2 local hit": 3.0}
    assert ttft_chart_png(STEPS, "t", limits) == ttft_chart_png(STEPS, "t", limits)


@pytest.mark.parametrize("steps, means_ms, top_ms", [
    # By hand: step 1's mean 13 / 2 = 6.5 s; step 3's 1.0 s; the tallest mark is the 7.0 s request.
    ({"step 1 cold": [6.0, 7.0], "step 2 local hit": [], "step 3 cross-instance hit": [1.0]},
     {1: 6500.0, 2: None, 3: 1000.0}, 7000),
    # No data at all: only the 2.0 s limits set the height; no cold mean for their label.
    ({"step 1 cold": [], "step 2 local hit": []}, {1: None, 2: None}, 2000),
], ids=["one-empty-step", "no-data"])
def test_chart_with_steps_without_successful_requests(steps, means_ms, top_ms):
    png = ttft_chart_png(steps, "t", {name: 2.0 for name in steps})
    assert png_size(png) == (1000, 500)
    assert chart_problems(png, means_ms, {x: 2000.0 for x in means_ms}, top_ms=top_ms, steps=len(steps)) == []


def test_chart_of_no_steps_is_an_empty_frame():
    png = ttft_chart_png({}, "t", {})
    assert png_size(png) == (1000, 500)
    assert chart_problems(png, {}, {}, top_ms=1, steps=0) == []  # a frame, nothing in it
    rgb = decoded(png)
    assert not ((rgb == NAVY).all(axis=2) | (rgb == CRIMSON).all(axis=2)).any()


# --- tables --------------------------------------------------------------------------------------------------------


def step(name: str, ttfts: list[float], failed: int = 0) -> StepResult:
    records = [RequestRecord(index=i, send_time=0.0, ttft_s=t, latency_s=t + 1, output_text="x", output_tokens=1,
                             status="ok") for i, t in enumerate(ttfts)]
    records += [RequestRecord(index=len(ttfts) + i, send_time=0.0, ttft_s=None, latency_s=30.0, output_text="",
                              output_tokens=0, status="timeout", error="read timed out") for i in range(failed)]
    return StepResult(name=name, records=records)


STATS = {s.name: TtftStats.model_validate(s.stats()) for s in (
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
