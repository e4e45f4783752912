"""The resilience stage (opt-in: `pytest -m resilience`): what users of a shared KV pool hit, each as a test that
asserts the outcome and bounds it.

1. The master restarts between a put and a cross-instance get: the instances keep serving (no request hangs), the
   pool has lost its keys (hits fall to 0), and once data is put again cross-instance hits come back in a bound.
2. Instance 1 is killed after it filled the pool: its segment leaves with it (embedded mode). Instance 2's outcome
   for those prompts is named (a miss, a counted failure, or a hit from a segment that survived), never a hang,
   and a hit must give instance 1's own greedy tokens, or it is a false cross-instance hit.
3. Instance 1 is started again: instance 2's TTFT stays within a bound of its own cold TTFT while instance 1 is
   down and loading, and cross-instance hits work again once it serves.
4. The pool fills up, from empty (a new master): more distinct prompts than it holds; the master evicts, no request
   fails, and a hit that remains gives the tokens of the same KV read from the instance's own cache.

Each row's requests are fresh prompts (resilience.seed) sent one at a time with resilience.request_timeout_s.
What each row measured goes to reports/<run>/resilience.json and the Allure report.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import allure
import pytest

from harness import bench, probe, resilience, serving
from harness.names import DEPLOYMENT
from harness.progress import logger
from harness.resilience import MASTER_KEYS, Live, send_alone
from harness.waiting import wait_until

pytestmark = [pytest.mark.resilience, allure.parent_suite("resilience"), allure.suite("6 resilience"),
              allure.feature("6 resilience")]


# The instances' store clients ping the master every second and remount their segments on a new one: 3-5 s measured.
REMOUNT_S = 60

log = logger("resilience")


@pytest.fixture(scope="module")
def measured(run_dir: Path) -> Iterator[dict]:
    """What the rows measured, written to reports/<run>/resilience.json at the end of the stage."""
    rows: dict = {}
    yield rows
    (run_dir / "resilience.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")


@pytest.fixture(scope="module")
def live(deployment, instances) -> Live:
    """The session's Deployment with its instances ready; a master or instance the stage restarts is the
    Deployment's, stopped or kept by its policy."""
    if len(instances) < 2:
        pytest.skip("the resilience stage needs two instances")
    return Live(deployment)


class Prompts:
    """Fresh prompts of benchmark.input_len tokens, never sent before, made CHUNK at a time: chunk k from the seed
    resilience.seed (k = 0), then resilience.seed x 1000 + k."""

    CHUNK = 100

    def __init__(self, live: Live):
        self.live, self.made, self.chunks = live, [], 0

    def take(self, n: int) -> list[str]:
        t = self.live.target
        tokenize = bench.tokenize_via(self.live.instance("peer").url, t.model.served_name)
        while len(self.made) < n:
            seed = t.resilience.seed if self.chunks == 0 else t.resilience.seed * 1000 + self.chunks
            self.made += bench.make_dataset(tokenize, num_prompts=self.CHUNK, input_len=t.benchmark.input_len,
                                            seed=seed)
            self.chunks += 1
        taken, self.made = self.made[:n], self.made[n:]
        return taken


@pytest.fixture(scope="module")
def prompts(live: Live) -> Prompts:
    return Prompts(live)


@pytest.fixture(scope="module")
def peer_cold_ttft(live: Live, prompts: Prompts, measured: dict) -> float:
    """The peer's own cold TTFT for a prompt sent alone, before any disruption: the baseline of row 3's bound."""
    r = live.target.resilience
    replies = [send_alone(live.instance("peer"), live.target, p, r.request_timeout_s) for p in prompts.take(3)]
    bad = [x for x in replies if x.status != "ok"]
    if bad:
        pytest.fail(f"{DEPLOYMENT}{live.instance('peer').name} did not serve a cold prompt before the disruptions: "
                    f"{bad[0].status} {bad[0].error}", pytrace=False)
    ttft = statistics.median(x.ttft_s for x in replies)
    measured["peer_cold_ttft_s"] = ttft
    return ttft


def settle(live: Live) -> float:
    return probe.wait_pool_settled(live.master_metrics)


def hangs(replies, timeout_s: float) -> list:
    return [x for x in replies if x.status == "timeout" or x.latency_s >= timeout_s]


def cross_instance_hit_within(live: Live, prompts: Prompts, writer, reader, bound_s: float, since: float):
    """Put a fresh prompt through `writer`, read it from `reader`, again until `reader` gets tokens from the pool or
    bound_s (from `since`) has passed. Returns (seconds since `since` when the hit came within bound_s, else None;
    the attempts)."""
    r, attempts = live.target.resilience, []
    while True:
        [prompt] = prompts.take(1)
        put = send_alone(writer, live.target, prompt, r.request_timeout_s)
        settle(live)
        got = send_alone(reader, live.target, prompt, r.request_timeout_s)
        attempts.append({"at_s": round(time.monotonic() - since, 2), "put": put.status, "get": got.status,
                         "cached_tokens": got.cached_tokens})
        elapsed = time.monotonic() - since
        if elapsed > bound_s:
            return None, attempts  # a hit after the bound is no recovery within it
        if got.status == "ok" and got.cached_tokens > 0:
            return elapsed, attempts
        time.sleep(1)


def test_master_restart_loses_the_pool_and_recovers(live, prompts, measured, peer_cold_ttft):
    r, first, peer = live.target.resilience, live.instance("first"), live.instance("peer")
    batch = prompts.take(r.prompts)
    put = [send_alone(first, live.target, p, r.request_timeout_s) for p in batch]
    settle(live)
    keys = live.master_metrics().total(MASTER_KEYS)
    assert all(x.status == "ok" for x in put) and keys > 0, (
        f"{DEPLOYMENT}before the restart, {first.name} did not fill the pool: {[x.status for x in put]}, the master "
        f"holds {keys:.0f} keys")
    restart_s = live.restart_master()
    restarted = time.monotonic()
    after = [send_alone(peer, live.target, p, r.request_timeout_s) for p in batch]
    row = measured["master_restart"] = {
        "keys_before": keys, "restart_s": round(restart_s, 2),
        "after": [{"status": x.status, "cached_tokens": x.cached_tokens, "seconds": round(x.latency_s, 2),
                   "error": x.error} for x in after]}
    hung = hangs(after, r.request_timeout_s)
    assert not hung, (f"after the master restarted, {len(hung)} of {len(after)} requests to {peer.name} hung "
                      f"(no end within resilience.request_timeout_s {r.request_timeout_s:g} s): {hung[0].error}")
    hits = sum(x.cached_tokens for x in after if x.status == "ok")
    failed = [x for x in after if x.status != "ok"]
    log.info(f"master restarted in {restart_s:.1f} s; {peer.name} then served {len(after) - len(failed)} of "
             f"{len(after)} prompts put before it, {hits} tokens from the pool, {len(failed)} failed")
    assert hits == 0, (f"after the master restarted, {peer.name} got {hits} tokens of prompts put before the restart "
                       "from the pool: a restarted master starts empty (its state is in memory), so these hits are "
                       "not what the pool holds")
    recovered, attempts = cross_instance_hit_within(live, prompts, first, peer, r.recovery_s, restarted)
    row |= {"recovered_after_s": recovered and round(recovered, 2), "attempts": attempts}
    allure.attach(json.dumps(row, indent=2), "master restart", allure.attachment_type.JSON)
    assert recovered is not None, (
        f"no cross-instance hit within resilience.recovery_s {r.recovery_s:g} s of the master restart "
        f"({len(attempts)} prompts put on {first.name} and read on {peer.name}, last: {attempts[-1]}): the instances "
        "did not join the new master's pool again")
    log.info(f"cross-instance hits back {recovered:.1f} s after the master restart")


def test_instance_1_killed_after_filling_the_pool(live, prompts, measured):
    r, c = live.target.resilience, live.target.benchmark.correctness
    first, peer = live.instance("first"), live.instance("peer")
    model = live.target.model.served_name

    def ask(inst, prompt, role):
        return probe.ask(inst.url, inst.name, model, prompt, c, role, r.request_timeout_s,
                         lambda: serving.metrics(inst))

    batch = prompts.take(r.prompts)
    references = []
    for p in batch:  # cold, then the local hit whose greedy tokens a pool hit of the same KV must give
        ask(first, p, "cold")
        references.append(ask(first, p, "local_hit"))
    settle(live)
    log_from = len(peer.process.log())
    killed_at = time.monotonic()
    log.info(f"{first.name}: {first.process.kill()}")

    def outcome(i: int, prompt: str) -> dict:
        start = time.monotonic()
        try:
            got = ask(peer, prompt, "pool_hit")
        except probe.ProbeError as e:
            return {"prompt": i, "outcome": "failed", "seconds": round(time.monotonic() - start, 2),
                    "error": str(e)[:300]}
        same = got.token_ids == references[i].token_ids
        return {"prompt": i, "outcome": "miss" if got.cached_tokens == 0 else ("hit" if same else "false hit"),
                "seconds": round(got.seconds, 2), "cached_tokens": got.cached_tokens,
                "local_hit_tokens": references[i].cached_tokens}

    # Again and again until none fails: a get of KV on the dead segment fails until the master drops the segment
    # (its client TTL), then the prompts are misses. Each round is judged as it comes.
    rounds = measured["instance_1_killed"] = []
    while True:
        at = time.monotonic() - killed_at
        outcomes = []
        for i, p in enumerate(batch):
            outcomes.append(outcome(i, p))
            if outcomes[-1]["seconds"] >= r.request_timeout_s:
                break  # one hang says it: the others would only wait as long
        rounds.append({"at_s": round(at, 2), "outcomes": outcomes})
        counts = {k: sum(o["outcome"] == k for o in outcomes) for k in ("hit", "miss", "failed", "false hit")}
        cause = resilience.load_failure_cause(peer.process.log()[log_from:])
        rounds[-1]["cause"] = cause
        log.info(f"{at:.1f} s after {first.name} was killed, {peer.name} on the prompts it had put: " +
                 ", ".join(f"{n} {k}" for k, n in counts.items() if n) + (f" ({cause})" if counts["failed"] else ""))
        if outcomes[-1]["seconds"] >= r.request_timeout_s:
            # Is it the prompts whose KV was on the dead segment, or the whole instance? A fresh prompt says.
            [fresh] = prompts.take(1)
            other = send_alone(peer, live.target, fresh, r.request_timeout_s)
            rounds[-1]["fresh_prompt"] = {"status": other.status, "seconds": round(other.latency_s, 2)}
            whole = ("a fresh prompt hung too: the whole instance stalls" if other.status == "timeout" else
                     f"a fresh prompt was served ({other.status}, {other.latency_s:.1f} s)")
            pytest.fail(f"after {first.name} was killed, a request to {peer.name} for a prompt {first.name} had put "
                        f"hung (no end within resilience.request_timeout_s {r.request_timeout_s:g} s; {cause}); "
                        f"{whole}. {peer.name} waits on the dead instance's segment instead of failing or "
                        "recomputing", pytrace=False)
        false = [o for o in outcomes if o["outcome"] == "false hit"]
        assert not false, (f"false cross-instance hit: after {first.name} was killed, {peer.name} took "
                           f"{false[0]['cached_tokens']} cached tokens for prompt {false[0]['prompt']} and answered "
                           f"other greedy tokens than {first.name}'s own cache gave for it: the pool served KV that "
                           "is not that prompt's")
        if not counts["failed"]:
            break
        assert time.monotonic() - killed_at <= r.recovery_s, (
            f"{peer.name}'s requests for prompts {first.name} had put still failed {at:.0f} s after it was killed, "
            f"beyond resilience.recovery_s {r.recovery_s:g} s ({cause}): the master kept the dead segment's keys")
        time.sleep(2)
    allure.attach(json.dumps(rounds, indent=2), f"{peer.name} after {first.name} was killed",
                  allure.attachment_type.JSON)


def test_instance_1_restarted_keeps_the_peer_within_bounds(live, prompts, measured, peer_cold_ttft):
    r, first, peer = live.target.resilience, live.instance("first"), live.instance("peer")
    if first.process.alive():  # run alone (-k): the row before left it running
        log.info(f"{first.name}: {first.process.kill()}")
    live.restart(first)
    bound = r.ttft_spike_ratio * peer_cold_ttft
    series = []

    def peer_serves() -> None:
        [p] = prompts.take(1)
        x = send_alone(peer, live.target, p, r.request_timeout_s)
        series.append({"at_s": round(time.monotonic() - first.started_at, 2), "status": x.status,
                       "ttft_s": x.ttft_s and round(x.ttft_s, 3), "error": x.error})

    while not serving.healthy(first) and time.monotonic() - first.started_at < first.spec.ready_timeout_s:
        if not first.process.alive():
            break  # wait_ready names it, with its log
        peer_serves()
    serving.wait_ready([first], watch=[live.master])
    for _ in range(3):  # right after it joined again: its empty segment is new to the master
        peer_serves()
    ready_s = time.monotonic() - first.started_at
    row = measured["instance_1_restarted"] = {"ready_s": round(ready_s, 1), "peer_cold_ttft_s": peer_cold_ttft,
                                             "bound_s": bound, "peer": series}
    ttfts = [s["ttft_s"] for s in series if s["status"] == "ok"]
    failed = [s for s in series if s["status"] != "ok"]
    log.info(f"{first.name} restarted, ready in {ready_s:.0f} s; meanwhile {peer.name} served {len(ttfts)} of "
             f"{len(series)} prompts, TTFT max {max(ttfts, default=math.nan):.3f} s (bound {bound:.3f} s)")
    assert not failed, (f"while {first.name} was restarting, {len(failed)} of {len(series)} requests to {peer.name} "
                        f"failed, first: {failed[0]}")
    worst = max(series, key=lambda s: s["ttft_s"])
    assert worst["ttft_s"] <= bound, (
        f"while {first.name} was restarting, {peer.name}'s TTFT reached {worst['ttft_s']:.3f} s at "
        f"{worst['at_s']:.0f} s, more than resilience.ttft_spike_ratio {r.ttft_spike_ratio} x its cold TTFT "
        f"{peer_cold_ttft:.3f} s = {bound:.3f} s")
    recovered, attempts = cross_instance_hit_within(live, prompts, peer, first, r.recovery_s, time.monotonic())
    row |= {"cross_instance_hit_after_s": recovered and round(recovered, 2), "attempts": attempts}
    allure.attach(json.dumps(row, indent=2), f"{first.name} restarted", allure.attachment_type.JSON)
    assert recovered is not None, (
        f"after {first.name} restarted, it got no KV that {peer.name} put in the pool within resilience.recovery_s "
        f"{r.recovery_s:g} s (last: {attempts[-1]})")


def test_pool_full_evicts_and_remaining_hits_are_right(live, prompts, measured):
    t, r, c = live.target, live.target.resilience, live.target.benchmark.correctness
    first, peer = live.instance("first"), live.instance("peer")
    # From an empty pool, so that what is evicted is the fill's doing: a new master, and both segments mounted again.
    live.restart_master()
    segments = t.mooncake.config.global_segment_size * sum(x.kv_transfer_config is not None for x in t.instances)

    def mounted() -> float:
        got = live.master_metrics().total("master_total_capacity_bytes")
        return got if got >= segments else 0

    capacity = wait_until(mounted, timeout_s=REMOUNT_S, interval_s=0.5)
    if not capacity:
        pytest.fail(f"{DEPLOYMENT}after a master restart the instances' segments ({segments / 2**20:.0f} MiB in "
                    f"all) were not mounted again within {REMOUNT_S} s", pytrace=False)
    before = live.master_metrics()
    [one] = prompts.take(1)
    send_alone(first, t, one, r.request_timeout_s)
    settle(live)
    per_prompt = live.master_metrics().total("master_allocated_bytes") - before.total("master_allocated_bytes")
    if capacity <= 0 or per_prompt <= 0:
        pytest.fail(f"{DEPLOYMENT}the master reports {capacity:.0f} bytes of capacity and a prompt took "
                    f"{per_prompt:.0f} bytes (master_total_capacity_bytes, master_allocated_bytes): the pool's size "
                    "cannot be read", pytrace=False)
    n = math.ceil(r.fill_factor * capacity / per_prompt)
    if n > r.max_fill_prompts:
        pytest.skip(f"filling this pool takes {n} prompts ({capacity / 2**30:.1f} GiB at {per_prompt / 2**20:.1f} MiB "
                    f"a prompt, x resilience.fill_factor {r.fill_factor}), more than resilience.max_fill_prompts "
                    f"{r.max_fill_prompts}; raise it, or run the stage on a target with a smaller pool "
                    "(configs/cpu-local-resilience.yaml)")
    fill = prompts.take(n)
    step = bench.run_step(first.url, t.model.served_name, fill, output_len=t.benchmark.output_len,
                          concurrency=t.benchmark.concurrency, timeout_s=r.request_timeout_s, name="pool fill")
    settle(live)
    after = live.master_metrics()
    evicted = resilience.evicted(before, after)
    row = measured["pool_full"] = {"capacity_bytes": capacity, "bytes_per_prompt": per_prompt, "prompts": n,
                                   "failed": len(step.failures), "evicted_keys": evicted,
                                   "keys_after": after.total(MASTER_KEYS)}
    log.info(f"pool of {capacity / 2**20:.0f} MiB filled with {n} prompts of {per_prompt / 2**20:.1f} MiB: "
             f"{evicted:.0f} keys evicted, {len(step.failures)} requests failed")
    assert not step.failures, (f"filling the pool, {len(step.failures)} of {n} requests to {first.name} failed, "
                               f"first: {step.failures[0].status} {step.failures[0].error}")
    assert evicted > 0, (f"{n} prompts of {per_prompt / 2**20:.1f} MiB went into a pool of {capacity / 2**20:.0f} MiB "
                         "and the master evicted nothing (master_evicted_key_count): it holds more than its capacity "
                         "or the fill did not reach the pool")
    # The last prompts of the fill are the likeliest to remain, in the pool and in the first instance's own cache.
    compared = []
    for i, p in enumerate(fill[-r.prompts:]):
        local = probe.ask(first.url, first.name, t.model.served_name, p, c, "local_hit", r.request_timeout_s,
                          lambda: serving.metrics(first))
        pool = probe.ask(peer.url, peer.name, t.model.served_name, p, c, "pool_hit", r.request_timeout_s,
                         lambda: serving.metrics(peer))
        comparable = pool.pool_tokens > 0 and pool.cached_tokens == local.cached_tokens
        compared.append({"prompt": n - r.prompts + i, "local_hit_tokens": local.cached_tokens,
                         "pool_hit_tokens": pool.pool_tokens, "comparable": comparable,
                         "equal": comparable and pool.token_ids == local.token_ids})
    row["remaining_hits"] = compared
    allure.attach(json.dumps(row, indent=2), "pool full", allure.attachment_type.JSON)
    differ = [x for x in compared if x["comparable"] and not x["equal"]]
    assert not differ, (f"after the pool filled up, prompt {differ[0]['prompt']} read from the pool on {peer.name} "
                        f"gave other greedy tokens than the same KV from {first.name}'s own cache: eviction left KV "
                        "that is wrong for its key")
    assert any(x["comparable"] for x in compared), (
        f"none of the last {r.prompts} prompts of the fill remained as a whole hit in the pool to compare "
        f"({compared}): eviction took the newest KV, not the oldest")
