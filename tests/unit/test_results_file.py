"""results.json as typed records (harness/results_file.py): the committed schema is the model's, the results of real
runs (tests/unit/recordings/results/) validate against it and are written back unchanged, a step recorded by the
library validates too, and repeat reads a run through the model."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from commands import repeat
from harness import evidence
from harness.bench import RequestRecord, StepResult
from harness.config import ROOT, load_target
from harness.metrics import Metrics
from harness.results_file import SCHEMA_FILE, NodeNetwork, RunResults, StepRecord, schema

RECORDED = Path(__file__).parent / "recordings" / "results"
RUNS = sorted(RECORDED.glob("*.json"))
PUBLISHED = json.loads((ROOT / SCHEMA_FILE).read_text())
ANNOTATIONS = {"title", "description", "default"}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def violations(value, node: dict, where: str = "$", root: dict = PUBLISHED) -> list[str]:
    """Where value breaks a JSON Schema of the keywords pydantic writes; any other keyword is refused, so no
    constraint is skipped unread."""
    unknown = set(node) - ANNOTATIONS - {"$defs", "$ref", "type", "properties", "required", "additionalProperties",
                                         "items", "anyOf", "enum", "pattern", "exclusiveMinimum"}
    assert not unknown, f"{where}: this checker does not know {unknown}"
    if "$ref" in node:
        return violations(value, root["$defs"][node["$ref"].rsplit("/", 1)[1]], where, root)
    if "anyOf" in node:
        return [] if any(not violations(value, n, where, root) for n in node["anyOf"]) else [f"{where}: no anyOf fits"]
    t = node.get("type")
    if t in ("number", "integer"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (t == "number" or
                                                                                  isinstance(value, int))
    elif t is not None:
        ok = isinstance(value, TYPES[t])
    else:
        ok = True
    if not ok:
        return [f"{where}: {value!r} is not {t}"]
    out = []
    if "enum" in node and value not in node["enum"]:
        out.append(f"{where}: {value!r} not in {node['enum']}")
    if "pattern" in node and not re.search(node["pattern"], value):
        out.append(f"{where}: {value!r} does not match {node['pattern']}")
    if "exclusiveMinimum" in node and not value > node["exclusiveMinimum"]:
        out.append(f"{where}: {value!r} not > {node['exclusiveMinimum']}")
    if isinstance(value, dict):
        props = node.get("properties", {})
        out += [f"{where}: {k} missing" for k in node.get("required", []) if k not in value]
        for k, v in value.items():
            extra = node.get("additionalProperties", True)
            if k in props:
                out += violations(v, props[k], f"{where}.{k}", root)
            elif extra is False:
                out.append(f"{where}: {k} is not in the schema")
            elif isinstance(extra, dict):
                out += violations(v, extra, f"{where}.{k}", root)
    if isinstance(value, list) and "items" in node:
        for i, v in enumerate(value):
            out += violations(v, node["items"], f"{where}[{i}]", root)
    return out


def test_the_committed_schema_is_the_models():
    assert PUBLISHED == schema(), (f"{SCHEMA_FILE} is not what harness/results_file.py generates: "
                                   f"python -m harness.results_file > {SCHEMA_FILE}")


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.stem)
def test_results_of_real_runs_validate_against_the_published_schema(path):
    assert violations(json.loads(path.read_text()), PUBLISHED) == []


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.stem)
def test_results_of_real_runs_are_read_back_and_written_unchanged(path):
    """The model keeps every key of the file as it was: old readers of results.json read it as before. (A number
    may come back as a float where it was written as an int: pool_evidence's connector_log `pool`.)"""
    results = RunResults.read(path)
    assert json.loads(results.to_json()) == json.loads(path.read_text())
    assert all(s.stats.count == s.stats.ok for s in results.steps.values())  # green runs


def broken(change) -> dict:
    data = copy.deepcopy(json.loads((RECORDED / "cpu-local.json").read_text()))
    change(data)
    return data


@pytest.mark.parametrize("change", [
    lambda d: d["steps"]["cold"].update(speed="fast"),  # a key the schema does not know
    lambda d: d["steps"]["cold"].pop("served_by"),
    lambda d: d["steps"]["cold"].update(served_by="cache"),
    lambda d: d["steps"]["cold"]["stats"].update(mean="1.2"),
    lambda d: d["steps"]["cold"]["pool_evidence"][0].update(unit="bytes"),
    lambda d: d["comparisons"][0].update(verdict="passed"),
    lambda d: d["correctness"]["summary"].pop("equal"),
    lambda d: d["steps"]["cold"]["evidence"]["master"].update(master_key_count="7"),
], ids=["unknown key", "no served_by", "served_by cache", "mean a string", "unit bytes", "verdict passed",
        "summary without equal", "evidence a string"])
def test_a_results_file_that_breaks_the_schema_is_refused_by_both(change, tmp_path):
    data = broken(change)
    assert violations(data, PUBLISHED)
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(ValidationError):
        RunResults.read(tmp_path / "results.json")


def step_result(ttfts: list[float]) -> StepResult:
    return StepResult(name="cold", records=[RequestRecord(index=i, send_time=0.0, ttft_s=t, latency_s=t + 0.5,
                                                          output_text="x", output_tokens=1, status="ok")
                                            for i, t in enumerate(ttfts)])


def test_a_step_recorded_by_the_library_is_written_read_back_and_valid(tmp_path):
    inst = Metrics.of_totals({"vllm:prefix_cache_hits_total": 0.0, "vllm:external_prefix_cache_hits_total": 896.0,
                              "vllm:time_to_first_token_seconds_sum": 0.6, "vllm:time_to_first_token_seconds_count": 2})
    master = Metrics.of_totals({"master_batch_get_replica_list_items_total": 7.0})
    readings = [evidence.read(s, inst, master, [448, 448], "") for s in ("external_hits", "cached_tokens",
                                                                           "master_gets")]
    results = RunResults.start(load_target("cpu-local"), "configs/cpu-local.yaml")
    results.steps["cross_instance_hit"] = StepRecord.measured(
        step_result([0.2, 0.4]), instance="instance-2", client="ours", records="cross_instance_hit.jsonl",
        evidence={"instance-2": inst, "master": master}, pool_evidence=readings,
        served_by=evidence.served_by(readings, 0), held_tokens_before=None)
    results.steps["cold"] = StepRecord.measured(
        step_result([1.0]), instance="instance-1", client="ours", records="cold.jsonl", evidence={},
        pool_evidence=[], served_by="neither", held_tokens_before=0,
        node_network=NodeNetwork(node="node1", received_bytes=1234))
    results.write(tmp_path / "results.json")
    data = json.loads((tmp_path / "results.json").read_text())
    assert violations(data, PUBLISHED) == []
    step3 = data["steps"]["cross_instance_hit"]
    assert step3["server_ttft_mean_s"] == pytest.approx(0.3) and step3["stats"]["mean"] == pytest.approx(0.3)
    assert step3["served_by"] == "pool" and [r["pool"] for r in step3["pool_evidence"]] == [896, 896, 7]
    assert "node_network" not in step3 and data["steps"]["cold"]["node_network"]["received_bytes"] == 1234
    assert data["finished"] >= data["started"] and len(data["config_sha256"]) == 64
    back = RunResults.read(tmp_path / "results.json")
    assert back == results and back.steps["cross_instance_hit"].evidence["instance-2"].total(
        "vllm:external_prefix_cache_hits") == 896


def test_repeat_reads_a_run_through_the_model(tmp_path, monkeypatch):
    monkeypatch.setattr(repeat, "ROOT", tmp_path)
    monkeypatch.setattr(repeat, "OUT", tmp_path / "reports" / "repeat")
    (tmp_path / "reports" / "repeat").mkdir(parents=True)

    def a_run(argv, **kwargs):  # the run writes its folder and results.json, as pytest -m acceptance does
        (tmp_path / "reports" / "cpu-local-20261203-171659").mkdir()
        shutil.copy(RECORDED / "cpu-local.json", tmp_path / "reports" / "cpu-local-20261203-171659" / "results.json")
        return 0

    monkeypatch.setattr(repeat, "run_to_teardown", a_run)
    run = repeat.one_run(tmp_path / "cpu-local.yaml", "cpu-local", "default-1", [])
    recorded = json.loads((RECORDED / "cpu-local.json").read_text())
    assert run["green"] and run["run_dir"] == "cpu-local-20261203-171659"
    assert run["ratios"] == {c["name"]: c["actual_ratio"] for c in recorded["comparisons"]}
    assert run["mean_ttft_s"] == {s: v["stats"]["mean"] for s, v in recorded["steps"].items()}
    assert run["correctness"] == recorded["correctness"]["summary"] and run["correctness"]["equal"] == 8
    assert run["miss_control"] == recorded["correctness"]["miss_control"]
    assert run["timings"] == recorded["timings"] and run["probe_seconds"] == recorded["correctness"]["seconds"]
