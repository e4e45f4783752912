"""The one metrics type (harness/metrics.py) on the /metrics texts recorded from live deployments
(tests/unit/recordings/): vLLM 0.11.0 and 0.32.0, Mooncake 0.3.7.post2 and 0.3.13.post1."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from harness.metrics import Metrics, NotPrometheus, Sample

RECORDINGS = Path(__file__).parent / "recordings"
TEXTS = sorted(p for p in RECORDINGS.glob("*/metrics*.txt") if not p.name.startswith("metrics-summary"))
SUMMARIES = sorted(RECORDINGS.glob("*/metrics-summary*.txt"))  # the master's /metrics/summary: not Prometheus text
VLLM_032 = RECORDINGS / "vllm-0.32.0" / "metrics-after-steps.txt"
MC_0313 = RECORDINGS / "mooncake-0.3.13.post1"


def read(path: Path) -> Metrics:
    return Metrics.parse(path.read_text())


def sample_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_recorded_sample_line_is_one_sample_with_its_name_and_value(path):
    lines = sample_lines(path.read_text())
    m = read(path)
    assert len(m) == len(lines)
    for line, s in zip(lines, m):
        written = line.split("{", 1)[0].split(" ", 1)[0]
        # prometheus_client names a counter's sample with _total where the text leaves it out (Mooncake 0.3.13)
        assert s.name in (written, written + "_total"), line
        assert s.value == float(line.rsplit(" ", 1)[1]), line


@pytest.mark.parametrize("path", SUMMARIES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_text_the_parser_refuses_is_refused_with_its_start_quoted(path):
    with pytest.raises(NotPrometheus, match="not Prometheus text") as e:
        read(path)
    assert repr(path.read_text()[:20])[1:-1] in str(e.value)


def test_labels_are_kept_and_filter_the_total():
    """vLLM 0.32 (recordings/vllm-0.32.0/metrics-after-steps.txt, instance 2 after step 3 and the probe):
    prompt tokens by source, three label sets of one counter."""
    m = read(VLLM_032)
    assert m.total("vllm:prompt_tokens_by_source", source="external_kv_transfer") == 43008
    assert m.total("vllm:prompt_tokens_by_source", source="local_compute") == 6952
    assert m.total("vllm:prompt_tokens_by_source") == 6952 + 0 + 43008
    assert m.total("vllm:prompt_tokens_by_source", source="nowhere") == 0
    # a counter by its family name or its sample name; its _created series is another name
    assert m.total("vllm:external_prefix_cache_hits") == m.total("vllm:external_prefix_cache_hits_total") == 43008
    assert m.has("vllm:external_prefix_cache_hits") and not m.has("vllm:no_such_counter")
    assert "vllm:external_prefix_cache_hits_created" in m.names()


def test_get_is_one_series_by_its_exact_labels():
    m = read(VLLM_032)
    assert m.get("vllm:num_requests_running", engine="0", model_name="qwen") == 0.0
    assert m.get("vllm:num_requests_running", engine="0") is None  # a subset of its labels is another series
    assert m.get("vllm:num_requests_running") is None
    assert m.get("process_virtual_memory_bytes") == 1.998241792e09
    [info] = m.series("vllm:cache_config_info")
    # hash_block_size and effective_attention_block_size are labels too: only block_size is the block size
    assert info.labels["block_size"] == "128" and info.labels["hash_block_size"] == "None"


def test_mooncake_0_3_13_counters_without_total_are_read_by_their_written_name():
    m = read(MC_0313 / "metrics-after-client.txt")  # `mem_cache_hit_nums_ 2`, TYPE counter
    assert m.total("mem_cache_hit_nums_") == 2 and "mem_cache_hit_nums__total" in m.names()


def test_minus_is_each_series_change_over_a_recorded_client():
    """Mooncake 0.3.13: a probe client's put, get and remove between the two recorded readings."""
    before, after = read(MC_0313 / "metrics-before-client.txt"), read(MC_0313 / "metrics-after-client.txt")
    moved = after.minus(before)
    assert len(moved) == len(after)  # every series of the later reading, absent before or not
    assert moved.total("master_put_start_requests") == 1 and moved.total("master_remove_requests") == 2
    # the segment mounted by the client was absent before: it counts from 0
    assert moved.series("segment_total_capacity_bytes")[0].value == 64.0 * 2**20
    changed = moved.changed()
    assert 0 < len(changed) < len(moved) and all(s.value != 0 for s in changed)
    assert before.minus(before).changed().by_name() == {}


def test_minus_matches_series_by_labels_whatever_their_order_and_leaves_out_created():
    before = Metrics([Sample("x_total", {"a": "1", "b": "2"}, 3.0), Sample("x_created", {}, 100.0)])
    after = Metrics([Sample("x_total", {"b": "2", "a": "1"}, 10.0), Sample("x_total", {"a": "9"}, 4.0),
                     Sample("x_created", {}, 200.0)])
    assert list(after.minus(before)) == [Sample("x_total", {"b": "2", "a": "1"}, 7.0),
                                         Sample("x_total", {"a": "9"}, 4.0)]
    assert after.minus(before).summed() == Metrics([Sample("x_total", {}, 11.0)])
    # two readings are equal when they hold the same samples, in any order
    assert Metrics(reversed(after.samples)) == after != Metrics(after.samples[1:])


def test_starting_keeps_a_family_and_its_suffixes():
    m = read(VLLM_032).starting(("vllm:time_to_first_token_seconds",))
    assert set(m.names()) >= {"vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count",
                              "vllm:time_to_first_token_seconds_bucket"}
    assert all(n.startswith("vllm:time_to_first_token_seconds") for n in m.names())


class Step(BaseModel):
    evidence: dict[str, Metrics]


def test_in_a_model_metrics_are_written_as_totals_and_read_back():
    summed = read(VLLM_032).minus(Metrics()).starting(("vllm:prompt_tokens_by_source",)).summed()
    step = Step(evidence={"instance-2": summed})
    assert step.model_dump() == {"evidence": {"instance-2": {"vllm:prompt_tokens_by_source_total": 49960.0}}}
    back = Step.model_validate_json(step.model_dump_json())
    assert back.evidence["instance-2"] == summed and back.evidence["instance-2"].total("vllm:prompt_tokens_by_source")
    assert Step.model_json_schema()["properties"]["evidence"]["additionalProperties"] == {
        "additionalProperties": {"type": "number"}, "type": "object"}
