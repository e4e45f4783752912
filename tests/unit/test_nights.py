"""Tonight against the last nights (harness/nights.py, tests/acceptance/test_06_nights.py) on the three real runs'
results.json (tests/unit/recordings/results/): histories made of copies of them, shifted back by whole days, are
green; the same history with tonight's cross-instance hit 30% slower is red naming it, its values and the runs; too
few comparable runs skip; another target, other versions, another config, a later run and an unreadable file are
skipped and reported; and each gate has its negative control. Times: cpu-local.json started 2026-12-03 17:17:56 UTC,
so its copy shifted back n days started 2026-12-(03-n) 17:17 UTC."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from harness import nights, report
from harness.config import Nights, load_target
from harness.results_file import RunResults, config_sha256
from tests.acceptance import test_06_nights
from tests.unit.test_results_file import PUBLISHED, violations

RECORDED = Path(__file__).parent / "recordings" / "results"
DAY = 86400.0
# cpu-local.json's values (seconds; ratios are mean_ttft of the step over cold's):
CROSS_MEAN = 1.6005259335498523  # cross_instance_hit mean TTFT
CROSS_RATIO = 0.2290996610648993  # cross_instance_ttft_fraction
LOCAL_RATIO = 0.19158661009603437  # local_hit_ttft_fraction


def real(name: str = "cpu-local") -> dict:
    return json.loads((RECORDED / f"{name}.json").read_text())


def shifted(data: dict, days: float) -> dict:
    out = copy.deepcopy(data)
    out["started"] -= days * DAY
    out["finished"] -= days * DAY
    return out


def slower(data: dict, step: str, factor: float) -> dict:
    """The run with every TTFT statistic of `step` times factor, and its comparisons' values and ratios to match."""
    out = copy.deepcopy(data)
    stats = out["steps"][step]["stats"]
    for key in ("mean", "median", "p90", "p99", "min", "max"):
        stats[key] *= factor
    for row in out["comparisons"]:
        if row["target"] == step:
            row["target_value"] *= factor
        if row["baseline"] == step:
            row["baseline_value"] *= factor
        row["actual_ratio"] = row["target_value"] / row["baseline_value"]
    return out


def write(history: Path, folder: str, data: dict) -> None:
    (history / folder).mkdir(parents=True)
    (history / folder / "results.json").write_text(json.dumps(data))


def tonight(data: dict, tmp_path: Path) -> RunResults:
    """A run read back through the model, as the acceptance run holds it."""
    (tmp_path / "tonight.json").write_text(json.dumps(data))
    return RunResults.read(tmp_path / "tonight.json")


@pytest.fixture
def history(tmp_path) -> Path:
    """The three real runs, each copied three times, shifted back 1, 2 and 3 days: night-N-<target>/results.json."""
    folder = tmp_path / "history"
    for name in ("cpu-local", "cpu-local-seed", "cpu-local-2node"):
        for n in (1, 2, 3):
            write(folder, f"night-{n}-{name}", shifted(real(name), n))
    return folder


def found(record, kind: str, name: str, statistic: str):
    return next(f for f in record.findings if (f.kind, f.name, f.statistic) == (kind, name, statistic))


@pytest.mark.parametrize("name", ["cpu-local", "cpu-local-seed", "cpu-local-2node"])
def test_the_real_history_is_green_and_the_other_targets_are_reported(name, history, tmp_path):
    record = nights.compare(tonight(real(name), tmp_path), history, Nights())
    assert record.not_compared is None
    # The baseline: this target's three copies, oldest first; the six copies of the other two targets are skipped.
    assert [r.file for r in record.runs] == [f"night-{n}-{name}/results.json" for n in (3, 2, 1)]
    assert len(record.skipped) == 6 and all("target cpu-local" in s.reason and f"tonight's is {name}" in s.reason
                                            for s in record.skipped)
    assert not nights.regressions(record)
    # Every step with each of mean, median and p90, and each comparison: all compared, none regressed.
    steps = real(name)["steps"]
    assert len(record.findings) == 3 * len(steps) + len(real(name)["comparisons"])
    assert {f.verdict for f in record.findings} == {"pass"}


def test_tonight_cross_instance_hit_30_percent_slower_is_red_naming_it(history, tmp_path):
    record = nights.compare(tonight(slower(real(), "cross_instance_hit", 1.3), tmp_path), history, Nights())
    worse = nights.regressions(record)
    # The three statistics of cross_instance_hit and its ratio; cold, evict and local_hit and their ratio are as before.
    assert [(f.kind, f.name, f.statistic) for f in worse] == [
        ("step", "cross_instance_hit", "mean"), ("step", "cross_instance_hit", "median"),
        ("step", "cross_instance_hit", "p90"), ("ratio", "cross_instance_ttft_fraction", "mean_ttft")]
    mean = worse[0]
    # The baseline: the median of three equal copies, 1.6005 s; the limit 1.6005 x 1.25 = 2.0007 s; tonight
    # 1.6005 x 1.3 = 2.0807 s.
    assert mean.baseline == pytest.approx(CROSS_MEAN) and mean.limit == pytest.approx(2.0006574)
    assert mean.tonight == pytest.approx(2.0806837)
    assert mean.runs == [f"night-{n}-cpu-local/results.json" for n in (3, 2, 1)]
    said = nights.describe(mean, record)
    assert said == ("cross_instance_hit mean TTFT tonight 2081 ms, baseline 1601 ms (median of 3 runs: "
                    "night-3-cpu-local/results.json (2026-11-30 17:17 UTC) 1601 ms, "
                    "night-2-cpu-local/results.json (2026-12-01 17:17 UTC) 1601 ms, "
                    "night-1-cpu-local/results.json (2026-12-02 17:17 UTC) 1601 ms), +30%, limit 2001 ms "
                    "(nights.ttft_slower_fraction 0.25): regression")
    ratio = worse[3]
    # The ratio: baseline 0.2291, limit 0.2291 x 1.25 = 0.2864, tonight 0.2291 x 1.3 = 0.2978.
    assert ratio.baseline == pytest.approx(CROSS_RATIO) and ratio.tonight == pytest.approx(0.2978296)
    assert nights.describe(ratio, record).startswith(
        "cross_instance_ttft_fraction ratio (mean_ttft) tonight 0.298, baseline 0.229 (median of 3 runs: "
        "night-3-cpu-local/results.json (2026-11-30 17:17 UTC) 0.229, ")
    assert nights.describe(ratio, record).endswith("+30%, limit 0.286 (nights.ratio_worse_fraction 0.25): regression")


def test_a_step_within_the_tolerance_passes(history, tmp_path):
    """Negative control of the step gate: 20% slower is within 0.25 (and so is its ratio, x 1.2); 30% slower passes
    too when the target allows 0.35 for both."""
    assert not nights.regressions(nights.compare(tonight(slower(real(), "cross_instance_hit", 1.2), tmp_path),
                                                 history, Nights()))
    loose = Nights(ttft_slower_fraction=0.35, ratio_worse_fraction=0.35)
    assert not nights.regressions(nights.compare(tonight(slower(real(), "cross_instance_hit", 1.3), tmp_path),
                                                 history, loose))


def test_a_ratio_alone_worse_is_red_and_a_faster_step_never_is(history, tmp_path):
    """The ratio gate alone: cold 30% faster (no step is slower), so each hit over cold is 1/0.7 = 1.43 x its
    baseline: cross 0.2291 / 0.7 = 0.3273 > 0.2864, local 0.1916 / 0.7 = 0.2737 > 0.1916 x 1.25 = 0.2395."""
    record = nights.compare(tonight(slower(real(), "cold", 0.7), tmp_path), history, Nights())
    assert [(f.kind, f.name) for f in nights.regressions(record)] == [
        ("ratio", "local_hit_ttft_fraction"), ("ratio", "cross_instance_ttft_fraction")]
    assert found(record, "ratio", "local_hit_ttft_fraction", "mean_ttft").tonight == pytest.approx(LOCAL_RATIO / 0.7)
    # Negative control: cold 15% faster makes the ratios 1/0.85 = 1.18 x, within 0.25.
    assert not nights.regressions(nights.compare(tonight(slower(real(), "cold", 0.85), tmp_path), history, Nights()))


def test_a_ratio_that_must_stay_above_its_limit_is_worse_below_its_baseline(tmp_path):
    """A `>` comparison: lower is worse, so the limit is baseline x (1 - 0.25); tonight 0.7 x the baseline is red,
    0.8 x and 1.5 x are not."""
    def above(data: dict) -> dict:
        for row in data["comparisons"]:
            row["operator"] = ">"
        return data

    folder = tmp_path / "history"
    for n in (1, 2, 3):
        write(folder, f"night-{n}", above(shifted(real(), n)))

    def judged(factor: float):
        data = above(real())
        row = next(r for r in data["comparisons"] if r["name"] == "cross_instance_ttft_fraction")
        row["actual_ratio"] *= factor
        return found(nights.compare(tonight(data, tmp_path), folder, Nights()), "ratio",
                     "cross_instance_ttft_fraction", "mean_ttft")

    low = judged(0.7)
    assert low.verdict == "regression" and low.limit == pytest.approx(CROSS_RATIO * 0.75)
    assert judged(0.8).verdict == "pass" and judged(1.5).verdict == "pass"


def test_the_baseline_is_the_median_of_the_last_runs_by_start_time(tmp_path):
    """Four copies of cpu-local, their cross-instance hit scaled (oldest first) 3.0, 0.9, 1.0, 1.1. The last 3
    (nights.runs 3): median of 0.9, 1.0, 1.1 = 1.0 x 1.6005 s; tonight 1.28 x is above 1.25 x: red. All 4 (runs 4):
    median of 0.9, 1.0, 1.1, 3.0 = (1.0 + 1.1) / 2 = 1.05 x = 1.6806 s, limit 1.05 x 1.25 = 1.3125 x: 1.28 x passes.
    The folders are named against their order, so the order is the start time's, not the names'."""
    folder = tmp_path / "history"
    for name, days, factor in (("d", 4, 3.0), ("c", 3, 0.9), ("b", 2, 1.0), ("a", 1, 1.1)):
        write(folder, name, slower(shifted(real(), days), "cross_instance_hit", factor))
    now = tonight(slower(real(), "cross_instance_hit", 1.28), tmp_path)
    last3 = nights.compare(now, folder, Nights(runs=3))
    assert [r.file for r in last3.runs] == ["c/results.json", "b/results.json", "a/results.json"]
    mean = found(last3, "step", "cross_instance_hit", "mean")
    assert mean.values == pytest.approx([0.9 * CROSS_MEAN, CROSS_MEAN, 1.1 * CROSS_MEAN])
    assert mean.baseline == pytest.approx(CROSS_MEAN) and mean.verdict == "regression"
    all4 = found(nights.compare(now, folder, Nights(runs=4)), "step", "cross_instance_hit", "mean")
    assert all4.baseline == pytest.approx(1.05 * CROSS_MEAN) and all4.verdict == "pass"


def test_fewer_comparable_runs_than_min_runs_compare_nothing_and_say_why(tmp_path):
    folder = tmp_path / "history"
    write(folder, "night-1", shifted(real(), 1))
    write(folder, "night-2", shifted(real(), 2))
    write(folder, "other", shifted(real("cpu-local-seed"), 1))
    record = nights.compare(tonight(slower(real(), "cross_instance_hit", 1.3), tmp_path), folder, Nights(),
                            "nights-history")
    assert record.findings == [] and record.not_compared.startswith(
        "2 comparable run(s) in nights-history (same target cpu-local, versions and config), fewer than "
        "nights.min_runs 3; 1 file(s) skipped, first: other/results.json: target cpu-local-seed")
    # Negative control: min_runs 2 compares the two runs (and finds the slower hit).
    assert nights.regressions(nights.compare(tonight(slower(real(), "cross_instance_hit", 1.3), tmp_path), folder,
                                             Nights(min_runs=2)))


def test_runs_of_another_target_versions_or_config_are_ignored_and_reported(tmp_path):
    folder = tmp_path / "history"
    for n in (1, 2, 3):
        write(folder, f"night-{n}", shifted(real(), n))
    newer_vllm = shifted(real(), 4)
    newer_vllm["versions"]["vllm"] = "0.33.0+cpu"
    write(folder, "vllm", slower(newer_vllm, "cross_instance_hit", 5.0))
    edited = shifted(real(), 5)
    edited["config_sha256"] = "0" * 64
    write(folder, "edited", slower(edited, "cross_instance_hit", 5.0))
    write(folder, "2node", shifted(real("cpu-local-2node"), 1))
    write(folder, "later", shifted(real(), -1))  # started a day after tonight
    (folder / "broken").mkdir()
    (folder / "broken" / "results.json").write_text("{not json")
    record = nights.compare(tonight(real(), tmp_path), folder, Nights())
    reasons = {s.file.split("/")[0]: s.reason for s in record.skipped}
    assert reasons["vllm"] == "versions differ: vllm 0.33.0+cpu (tonight 0.32.0+cpu)"
    assert reasons["edited"] == "config sha256 000000000000, tonight's is 662708ce5a4c (another target YAML)"
    assert reasons["2node"].startswith("target cpu-local-2node, tonight's is cpu-local")
    assert reasons["later"] == "started 2026-12-04 17:17 UTC, not before tonight's run (2026-12-03 17:17 UTC)"
    assert reasons["broken"].startswith("unreadable: ")
    assert [r.file for r in record.runs] == [f"night-{n}/results.json" for n in (3, 2, 1)]
    assert not nights.regressions(record)  # the 5 x slower hits of the skipped runs moved no baseline
    # Negative control: the same copy with tonight's vllm is compared (and, as the oldest of 4, joins the baseline).
    newer_vllm["versions"]["vllm"] = "0.32.0+cpu"
    (folder / "vllm" / "results.json").write_text(json.dumps(slower(newer_vllm, "cross_instance_hit", 5.0)))
    assert "vllm/results.json" in [r.file for r in nights.compare(tonight(real(), tmp_path), folder, Nights()).runs]


def test_a_step_too_few_baseline_runs_measured_is_not_compared(tmp_path):
    folder = tmp_path / "history"
    for n in (1, 2, 3):
        data = shifted(real(), n)
        if n != 1:
            del data["steps"]["evict"]
        write(folder, f"night-{n}", data)
    record = nights.compare(tonight(slower(real(), "evict", 3.0), tmp_path), folder, Nights())
    evict = found(record, "step", "evict", "mean")
    assert evict.verdict == "not compared" and evict.runs == ["night-1/results.json"]
    assert nights.describe(evict, record) == "evict mean TTFT: not compared (only 1 baseline run(s) measured it)"
    assert not nights.regressions(record)


def test_the_comparison_is_kept_in_results_json_and_read_back(history, tmp_path):
    run = tonight(slower(real(), "cross_instance_hit", 1.3), tmp_path)
    run.nights = nights.compare(run, history, Nights(), "nights-history")
    run.write(tmp_path / "results.json")
    data = json.loads((tmp_path / "results.json").read_text())
    assert violations(data, PUBLISHED) == []
    assert data["nights"]["history"] == "nights-history" and len(data["nights"]["skipped"]) == 6
    assert RunResults.read(tmp_path / "results.json") == run


def test_tuning_nights_keeps_the_config_hash_and_another_change_does_not():
    t = load_target("cpu-local")
    tuned = t.model_copy(update={"nights": Nights(runs=14, ttft_slower_fraction=0.5)})
    assert config_sha256(tuned) == config_sha256(t)
    longer = t.model_copy(update={"endurance": t.endurance.model_copy(update={"duration_s": 3600.0})})
    assert config_sha256(longer) == config_sha256(t)
    other = t.model_copy(update={"benchmark": t.benchmark.model_copy(update={"num_prompts": 99})})
    assert config_sha256(other) != config_sha256(t)


def test_min_runs_above_runs_is_refused():
    with pytest.raises(ValidationError, match="more than nights.runs 2"):
        Nights(runs=2, min_runs=3)
    assert Nights(runs=3, min_runs=3).min_runs == 3  # negative control


def test_the_ratio_chart_is_a_png_the_same_for_the_same_nights(history, tmp_path):
    run = tonight(slower(real(), "cross_instance_hit", 1.3), tmp_path)
    record = nights.compare(run, history, Nights())
    png = report.nights_chart_png(record, run.started, "cpu-local: ratios across nights")
    assert png.startswith(b"\x89PNG") and png == report.nights_chart_png(record, run.started,
                                                                         "cpu-local: ratios across nights")


# --- the acceptance test, with the session it runs in stood in for --------------------------------------------------


def session(tmp_path, run: RunResults | None, stage5: bool = True, given: str = "history"):
    marker = SimpleNamespace(get_closest_marker=lambda name: object() if stage5 and name == "kv_pool" else None)
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    fixtures = {"run_results": run, "run_dir": run_dir}
    return SimpleNamespace(session=SimpleNamespace(items=[marker]), getfixturevalue=fixtures.__getitem__,
                           config=SimpleNamespace(getoption=lambda name: given))


TARGET = SimpleNamespace(name="cpu-local", nights=Nights())


def test_the_acceptance_test_skips_without_history_or_stage_5(tmp_path, history):
    with pytest.raises(pytest.skip.Exception, match="no --history DIR"):
        test_06_nights.test_tonight_against_the_last_nights(session(tmp_path, None), TARGET, None)
    with pytest.raises(pytest.skip.Exception, match="stage 5 is not in this session"):
        test_06_nights.test_tonight_against_the_last_nights(session(tmp_path, None, stage5=False), TARGET, history)
    empty = tonight(real(), tmp_path)
    empty.steps = {}
    with pytest.raises(pytest.skip.Exception, match="stage 5 measured no step tonight"):
        test_06_nights.test_tonight_against_the_last_nights(session(tmp_path, empty), TARGET, history)


def test_the_acceptance_test_skips_on_too_few_runs(tmp_path):
    folder = tmp_path / "history"
    write(folder, "night-1", shifted(real(), 1))
    run = tonight(real(), tmp_path)
    with pytest.raises(pytest.skip.Exception, match="nights not compared: 1 comparable run"):
        test_06_nights.test_tonight_against_the_last_nights(session(tmp_path, run), TARGET, folder)
    assert run.nights is not None and run.nights.not_compared  # results.json says so too


def test_the_acceptance_test_is_red_naming_the_step_and_green_on_the_real_history(tmp_path, history):
    run = tonight(slower(real(), "cross_instance_hit", 1.3), tmp_path)
    with pytest.raises(pytest.fail.Exception) as failed:
        test_06_nights.test_tonight_against_the_last_nights(session(tmp_path, run), TARGET, history)
    message = str(failed.value)
    assert message.startswith("nights: 4 value(s) regressed against the last nights (--history history): "
                              "cross_instance_hit mean TTFT tonight 2081 ms, baseline 1601 ms (median of 3 runs: "
                              "night-3-cpu-local/results.json (2026-11-30 17:17 UTC) 1601 ms")
    assert "cross_instance_ttft_fraction ratio (mean_ttft) tonight 0.298, baseline 0.229" in message
    assert "cold" not in message and "local_hit" not in message
    assert (tmp_path / "run" / "nights.png").read_bytes().startswith(b"\x89PNG")
    assert len(nights.regressions(run.nights)) == 4
    green = tonight(real(), tmp_path)
    test_06_nights.test_tonight_against_the_last_nights(session(tmp_path, green), TARGET, history)
    assert green.nights is not None and not nights.regressions(green.nights)
