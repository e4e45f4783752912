"""The endurance stage's pure parts (harness/endurance.py, the plan of harness/endurance_traffic.py, the charts): each
gate on synthetic series, red and green, with the first moment it names; the stall detector, the slope, the drift;
failure lines and master counters on real recordings (cited at each test)."""

from __future__ import annotations

import pytest

from harness import endurance as e
from harness import endurance_charts, endurance_traffic
from harness.config import ROOT, Endurance, load_target
from harness.endurance import Interval, ProbeRow, Sent
from harness.failure_lines import TRANSFER_FAILURES
from harness.metrics import Metrics

RECORDINGS = ROOT / "tests" / "unit" / "recordings"
T0 = 1_764_806_400.0  # 2025-12-04 00:00:00 UTC: the synthetic runs' start


def ok(at: float, ttft: float = 0.2, instance: str = "instance-1", latency: float | None = None) -> Sent:
    return Sent(at_s=at, wall=T0 + at, instance=instance, kind="miss", status="ok", ttft_s=ttft,
                latency_s=latency if latency is not None else ttft + 0.3)


def failed(at: float, status: str = "http_500", instance: str = "instance-2", latency: float = 0.1) -> Sent:
    return Sent(at_s=at, wall=T0 + at, instance=instance, kind="cross_instance_hit", status=status, ttft_s=None,
                latency_s=latency, error="Failing 1 request(s) due to KV load failure")


def steady(seconds: int, every: float = 0.5, ttft: float = 0.2) -> list[Sent]:
    """A healthy run: a request every `every` s on alternating instances, each TTFT `ttft`."""
    return [ok(i * every, ttft, f"instance-{1 + i % 2}") for i in range(int(seconds / every))]


def rows(seconds: int, step: int = 10, rss=lambda t: {"master": 100 * e.MIB}) -> list[Interval]:
    return [Interval(start_s=t - step, end_s=t, wall=T0 + t, rss_bytes=rss(t)) for t in range(step, seconds + 1, step)]


# --- --duration ---


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("90s", 90), ("1h", 3600), ("1h30m", 5400), (" 2.5m ", 150)])
def test_duration_parses(text, seconds):
    assert e.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10", "ten minutes", "10x", "", "m", "0s", "-5m", "10m abc"])
def test_a_bad_duration_says_what_is_accepted(text):
    with pytest.raises(ValueError, match="--duration"):
        e.parse_duration(text)


# --- slope, stall, statistics ---


def test_slope_is_least_squares():
    assert e.slope_per_s([(0, 1.0), (1, 3.0), (2, 5.0)]) == pytest.approx(2.0)
    assert e.slope_per_s([(0, 0.0), (1, 2.0), (2, 1.0), (3, 3.0)]) == pytest.approx(0.8)  # by hand: 4/5
    assert e.slope_per_s([(5, 1.0)]) is None and e.slope_per_s([(5, 1.0), (5, 2.0)]) is None
    assert e.mib_per_min(e.MIB / 60) == pytest.approx(1.0)


def test_a_silence_with_a_request_waiting_is_a_stall():
    records = steady(60)
    # instance-2 gets nothing out from 30 s for 50 s: two requests wait in that silence, one stall.
    records = [r for r in records if not (r.instance == "instance-2" and 30 <= r.at_s < 80)]
    records += [ok(30.5, ttft=50.0, instance="instance-2"), failed(31, "timeout", "instance-2", latency=49.0)]
    [s] = e.stalls(records, stall_s=40)
    assert (s.instance, s.begin_s, s.end_s) == ("instance-2", 30.5, 80.5)
    assert e.stalls(records, stall_s=60) == []


def test_a_request_queued_behind_others_that_progress_is_no_stall():
    records = steady(60) + [ok(1.0, ttft=45.0, instance="instance-1")]  # waited 45 s, but instance-1 kept answering
    assert e.stalls(records, stall_s=30) == []


def test_interval_rows_count_what_ended_in_them():
    records = [ok(1, 0.1), ok(2, 0.3), failed(3), failed(4, "timeout"), ok(12, 0.5)]
    row = e.interval_row(records, 0, 10, T0 + 10)
    assert (row.requests, row.failed) == (4, {"http_500": 1, "timeout": 1})
    assert row.ttft_p50_s == pytest.approx(0.2) and row.ttft_p99_s == pytest.approx(0.298)


# --- the gates: each red and green ---


def test_error_budget_green_within_it():
    records = steady(600) + [failed(300)]  # 1 of 1201
    g = e.error_budget(records, rows(600), 1.0, T0)
    assert g.ok and g.value == pytest.approx(1000 / 1201)


def test_error_budget_red_names_the_failure_past_it_and_the_master_restart_around_it():
    records = steady(600) + [failed(400 + i) for i in range(5)]  # 5 of 1205: 4.1 per 1000; 1.0 allows 1
    intervals = rows(600)
    for x in intervals:  # the master restarted at 395 s: its keys fell and its metrics went silent once
        x.pool_keys = 500.0 if x.end_s < 400 else 3.0
        x.master_up = x.end_s != 400
    x = intervals[40]  # 400-410 s
    x.connector_lines = ["E1201 17:01:38.120122 858 real_client.cpp:6281] BatchGet failed for key 'k': TRANSFER_FAIL"]
    g = e.error_budget(records, intervals, 1.0, T0)
    assert not g.ok and g.value == pytest.approx(1000 * 5 / 1205)
    assert g.first_at_s == 401  # the second failure: the budget allows one in 1205
    assert "401 s into the run (2025-12-04 00:06:41 UTC)" in g.message
    assert "http_500 5" in g.message and "the first failure at 400 s" in g.message
    assert "the pool's keys fell from 500 to 3" in g.message and "BatchGet failed" in g.message
    assert any(r["status"] == "http_500" for r in g.evidence["records"])


def test_no_stall_green_and_red():
    assert e.no_stall(steady(300), rows(300), 60, T0).ok
    records = [r for r in steady(300) if not (r.instance == "instance-1" and 100 <= r.at_s < 200)]
    records.append(ok(100, ttft=95.0))
    g = e.no_stall(records, rows(300), 60, T0)
    assert not g.ok and g.first_at_s == 100 and "on instance-1" in g.message and "past the bound of 60 s at 160 s" \
        in g.message


def test_memory_growth_green_when_level_after_warm_up():
    # Growth during the warm-up (the pool filling) is by design; level after it.
    level = rows(600, rss=lambda t: {"instance-1": (2000 + min(t, 120) * 5) * e.MIB, "master": 80 * e.MIB})
    g = e.memory_growth(level, 120, 10, T0)
    assert g.ok and g.value == pytest.approx(0.0, abs=1e-9)


def test_memory_growth_red_names_the_process_and_when_it_left_the_bound():
    # The master leaks 30 MiB a minute (0.5 MiB/s) from 300 s on.
    leak = rows(600, rss=lambda t: {"instance-1": 2000 * e.MIB, "master": (80 + max(0, t - 300) * 0.5) * e.MIB})
    g = e.memory_growth(leak, 120, 10, T0)
    assert not g.ok and "master's RSS grew" in g.message
    # its bound's line from 80 MiB at 120 s rises 1/6 MiB/s, the leak 1/2 MiB/s from 300 s:
    # 0.5 (t - 300) > (t - 120) / 6 from t > 390, so the first sample above it is 400 s (130 MiB against 126.7)
    assert g.first_at_s == 400 and "400 s into the run" in g.message and "pool's allocated bytes" not in g.message
    for x in leak:  # the same growth while the pool fills: the message says so
        x.pool_bytes = x.end_s * e.MIB
    assert "the pool's allocated bytes went from 120 to 600 MiB" in e.memory_growth(leak, 120, 10, T0).message
    assert e.memory_growth(leak[:5], 120, 10, T0).value is None  # nothing after the warm-up: not green


def test_ttft_drift_green_and_red():
    assert e.ttft_drift(steady(600), rows(600), 120, 120, 1.5, T0).ok
    slowing = [ok(r.at_s, 0.2 if r.at_s < 420 else 0.5, r.instance) for r in steady(600)]
    intervals = [e.interval_row(slowing, s - 10, s, T0 + s) for s in range(10, 601, 10)]
    g = e.ttft_drift(slowing, intervals, 120, 120, 1.5, T0)
    assert not g.ok and g.value == pytest.approx(2.5)
    assert g.first_at_s == 420  # a row counts the requests that ended in it: the first 0.5 s TTFTs end after 420 s
    short = e.ttft_drift(steady(300), rows(300), 120, 120, 1.5, T0)
    assert not short.ok and "less than two windows" in short.message


def test_probes_equal_green_and_red():
    equal = [ProbeRow(60.0 * i, T0 + 60 * i, "equal", "equal") for i in range(1, 5)]
    assert e.probes_equal(equal + [ProbeRow(300, T0 + 300, "inconclusive")], ["equal"], T0).ok
    wrong = equal + [ProbeRow(300, T0 + 300, "differs", "far", {"position": 0})]
    g = e.probes_equal(wrong, ["equal"], T0)
    assert not g.ok and g.first_at_s == 300 and "differs at token 0 (local vs pool: far)" in g.message
    close = equal + [ProbeRow(300, T0 + 300, "differs", "close", {"position": 7})]
    assert not e.probes_equal(close, ["equal"], T0).ok and e.probes_equal(close, ["equal", "close"], T0).ok
    none = e.probes_equal([ProbeRow(60, T0 + 60, "error"), ProbeRow(120, T0 + 120, "inconclusive")], ["equal"], T0)
    assert not none.ok and "nothing proves" in none.message


def test_judge_runs_the_five_gates_on_the_targets_fields():
    series = endurance_traffic.Series(started_wall=T0, records=steady(600), intervals=rows(600),
                                      probes=[ProbeRow(60, T0 + 60, "equal", "equal")])
    gates = endurance_traffic.judge(series, Endurance())
    assert set(gates) == {"error budget", "no stall", "memory growth", "TTFT p99 drift", "probes equal"}
    assert all(g.ok for g in gates.values()), [g.message for g in gates.values() if not g.ok]
    series.records.append(failed(500))  # 1 of 1201 is within 1 per 1000; 2 are not
    series.records.append(failed(501))
    assert not endurance_traffic.judge(series, Endurance())["error budget"].ok


# --- evidence from real recordings ---


def test_failure_lines_counted_by_pattern_on_a_real_log():
    # recorded by running the resilience stage: instance 2's log after instance 1 was killed (vLLM 0.32, Mooncake
    # 0.3.13), tests/unit/recordings/vllm-0.32.0/after-peer-killed-instance-2.log
    log = (RECORDINGS / "vllm-0.32.0" / "after-peer-killed-instance-2.log").read_text()
    counts, lines = e.failure_counts(log, TRANSFER_FAILURES)
    assert counts[r"(?i)due to kv load failure"] >= 1 and counts[r"\bTRANSFER_FAIL\b"] >= 4
    assert any("Failing 1 request(s) due to KV load failure" in x for x in lines)
    # and nothing on the healthy logs of every stack (tests/unit/recordings/failure-lines/healthy.log)
    assert e.failure_counts((RECORDINGS / "failure-lines" / "healthy.log").read_text(), TRANSFER_FAILURES) == ({}, [])


def test_master_failure_counters_moved_on_a_real_reading():
    # Mooncake 0.3.13's master before and after a client closed (tests/unit/recordings/mooncake-0.3.13.post1/)
    before = Metrics.parse((RECORDINGS / "mooncake-0.3.13.post1" / "metrics-after-client.txt").read_text()).by_name()
    after = Metrics.parse((RECORDINGS / "mooncake-0.3.13.post1" / "metrics-after-client-closed.txt").read_text())
    assert e.master_failures(before, after.by_name()) == {"master_get_replica_list_failures_total": 1.0}
    # a restarted master counts from 0 again: its counters are its own increase
    assert e.master_failures({"master_put_start_failures_total": 9.0}, {"master_put_start_failures_total": 2.0}) == {
        "master_put_start_failures_total": 2.0}


def test_rss_script_output_parsed():
    assert endurance_traffic.parse_rss('noise\n{"412": 1048576, "77": 0}\n') == {412: 1048576.0, 77: 0.0}
    assert endurance_traffic.parse_rss("Error: No such container") == {}


# --- the plan ---


def test_plan_is_seeded_and_follows_the_weights():
    weights = {"miss": 0, "local_hit": 1, "cross_instance_hit": 1, "conversation": 2}
    a = [endurance_traffic.Plan(11, weights).next() for _ in range(1)]
    one, two = endurance_traffic.Plan(11, weights), endurance_traffic.Plan(11, weights)
    jobs = [one.next() for _ in range(400)]
    assert jobs == [two.next() for _ in range(400)] and jobs[0] == a[0]
    kinds = {k: sum(j.kind == k for j in jobs) for k in endurance_traffic.Plan.KINDS}
    assert kinds["miss"] == 0 and 150 < kinds["conversation"] < 250 and {j.first for j in jobs} == {0, 1}
    with pytest.raises(ValueError, match="nothing to send"):
        endurance_traffic.Plan(1, dict.fromkeys(endurance_traffic.Plan.KINDS, 0))


def test_conversation_prompts_grow_by_prefix_and_fresh_prompts_differ():
    prompts = endurance_traffic.Prompts(11, chars_per_token=2.0)
    p1 = prompts.fresh(100)
    p2 = endurance_traffic.next_turn(p1, " the answer", prompts.fresh(16))
    p3 = endurance_traffic.next_turn(p2, " another", prompts.fresh(16))
    assert len(p1) == 200 and p3.startswith(p2) and p2.startswith(p1) and len(p3) > len(p2) > len(p1)
    heads = {prompts.fresh(8)[:8] for _ in range(200)}
    assert len(heads) == 200


# --- the target's section ---


def test_endurance_section_defaults_and_its_checks():
    t = load_target("cpu-local")
    assert t.endurance.concurrency_for(t.benchmark) == t.benchmark.concurrency
    assert Endurance(concurrency=3).concurrency_for(t.benchmark) == 3
    assert Endurance().too_short(600) is None and "shorter than endurance.warmup_s" in Endurance().too_short(300)
    with pytest.raises(ValueError, match="not more than stall_s"):
        Endurance(stall_s=120, request_timeout_s=120)


def test_charts_are_pngs_and_the_same_series_draws_the_same_bytes():
    intervals = [e.interval_row(steady(60) + [failed(15)], s - 10, s, T0 + s) for s in range(10, 61, 10)]
    for x in intervals:
        x.rss_bytes, x.pool_keys, x.pool_bytes, x.evicted_keys = {"master": 80 * e.MIB}, 10.0, 6 * e.MIB, 1.0
    one = endurance_charts.charts(intervals, "cpu-local", 20)
    assert set(one) == {"endurance-ttft.png", "endurance-failures.png", "endurance-memory.png", "endurance-pool.png"}
    assert all(png.startswith(b"\x89PNG") for png in one.values())
    assert one == endurance_charts.charts(intervals, "cpu-local", 20)
    assert endurance_charts.pool_png([], "empty").startswith(b"\x89PNG")
