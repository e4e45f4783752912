"""What the endurance stage does to a running deployment: sustained traffic against both instances for a duration,
a row of readings every interval, and correctness probes interleaved under load. The series it records and the gates
over them are harness/endurance.py's.

The traffic: `concurrency` workers, each taking jobs from one seeded plan until the duration or endurance.max_requests
is reached. A job is a miss (a fresh prompt), a local hit (a fresh prompt, then again on the same instance), a
cross-instance hit (a fresh prompt on one instance, then on the other) or a conversation (endurance.turns turns, each
prompt the last one, its answer and endurance.turn_tokens of new text, alternating the instances: a prefix that grows
turn by turn, read back from the pool on the other instance). Every request is streamed by harness/bench.py's client
with endurance.request_timeout_s and never raises; a failure is a record.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import asdict, dataclass, field

from harness import bench, mooncake, probe, serving
from harness import endurance as e
from harness.deployment import Deployment
from harness.evidence import KV_USAGE, held_tokens
from harness.metrics import Metrics
from harness.progress import logger
from harness.runtime import Container

log = logger("endurance")  # a row every interval, a probe that differs: [endurance] lines

# Runs inside a container: the RSS of each given process group (the suite starts every process in its own group, so
# an instance's API server and its engine core are counted together), by group id, in bytes.
RSS_SCRIPT = r"""
import json, os, sys
want = {int(a) for a in sys.argv[1:]}
out = {str(g): 0 for g in want}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        group = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[2])
        if group in want:
            for line in open(f"/proc/{d}/status"):
                if line.startswith("VmRSS:"):
                    out[str(group)] += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
print(json.dumps(out))
"""


def parse_rss(output: str) -> dict[int, float]:
    """RSS_SCRIPT's last JSON line -> {group id: bytes}; {} when it printed none (the container is gone)."""
    lines = [x for x in output.splitlines() if x.startswith("{")]
    return {int(k): float(v) for k, v in json.loads(lines[-1]).items()} if lines else {}


# --- the plan -------------------------------------------------------------------------------------------------


class Prompts:
    """Fresh random-character prompts of about n tokens at the served model's characters per token (measured once with
    harness/bench.py's exact dataset), each starting differently, so none hits another's KV. Thread-safe, seeded."""

    def __init__(self, seed: int, chars_per_token: float):
        self.rng, self.chars_per_token, self.lock = random.Random(seed), chars_per_token, threading.Lock()
        self.heads: set[str] = set()

    def fresh(self, tokens: int) -> str:
        n = max(bench.HEAD_CHARS, round(tokens * self.chars_per_token))
        with self.lock:
            while True:
                text = "".join(self.rng.choices(bench.ALPHABET, k=n))
                if text[:bench.HEAD_CHARS] not in self.heads:
                    self.heads.add(text[:bench.HEAD_CHARS])
                    return text


def next_turn(prompt: str, answer: str, new_text: str) -> str:
    """A conversation's next prompt: the last one, its answer and the user's new text. The last prompt is its prefix,
    so its KV (in the instance's own cache or the pool) serves all but the new part."""
    return f"{prompt}{answer}\n{new_text}"


@dataclass(frozen=True)
class Job:
    number: int
    kind: str  # miss, local_hit, cross_instance_hit, conversation
    first: int  # index of the instance it starts on (0 or 1)


class Plan:
    """The jobs in order, drawn from endurance.mix's weights by a seeded generator: the same seed, the same plan."""

    KINDS = ("miss", "local_hit", "cross_instance_hit", "conversation")

    def __init__(self, seed: int, weights: dict[str, float]):
        self.rng, self.lock, self.count = random.Random(seed), threading.Lock(), 0
        self.kinds = [k for k in self.KINDS if weights.get(k, 0) > 0]
        if not self.kinds:
            raise ValueError("endurance.mix gives every kind of job a weight of 0: nothing to send")
        self.weights = [weights[k] for k in self.kinds]

    def next(self) -> Job:
        with self.lock:
            self.count += 1
            return Job(self.count, self.rng.choices(self.kinds, self.weights)[0], self.rng.randrange(2))


# --- the run --------------------------------------------------------------------------------------------------


@dataclass
class Series:
    """What a run recorded: harness/endurance.py's inputs, and endurance.json."""

    started_wall: float = 0.0
    duration_s: float = 0.0
    concurrency: int = 0
    records: list[e.Sent] = field(default_factory=list)
    intervals: list[e.Interval] = field(default_factory=list)
    probes: list[e.ProbeRow] = field(default_factory=list)
    held_tokens_idle: dict[str, dict[str, int | None]] = field(default_factory=dict)  # before/after -> instance

    def to_dict(self) -> dict:
        return {"started_wall": self.started_wall, "duration_s": self.duration_s, "concurrency": self.concurrency,
                "requests": len(self.records), "held_tokens_idle": self.held_tokens_idle,
                "intervals": [x.to_dict() for x in self.intervals], "probes": [asdict(x) for x in self.probes],
                "records": [asdict(r) for r in self.records]}


class Run:
    """One endurance run on the session's Deployment (its current master and instances: a master the self-tests
    restart mid-run is read as the new one)."""

    def __init__(self, deployment: Deployment, duration_s: float):
        self.d, self.t = deployment, deployment.target
        self.cfg = self.t.endurance
        self.duration_s = duration_s
        self.first = serving.in_role(self.t, deployment.instances, "first")
        self.peer = serving.in_role(self.t, deployment.instances, "peer")
        self.pair = [self.first, self.peer]
        self.series = Series(duration_s=duration_s, concurrency=self.cfg.concurrency_for(self.t.benchmark))
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.in_flight: dict[int, tuple[float, str]] = {}  # ticket -> (sent at_s, instance)
        self.tickets = 0
        self.t0 = 0.0  # monotonic at the start of the traffic
        self.log_at: dict[str, int] = {}  # instance -> bytes of its log already read
        self.prompts: Prompts | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- requests --

    def send(self, inst: serving.RunningInstance, prompt: str, kind: str, job: int) -> tuple[e.Sent, str]:
        """One streamed request, recorded; (its record, the text it answered)."""
        with self.lock:
            self.tickets += 1
            ticket = self.tickets
            at = self.now()
            self.in_flight[ticket] = (at, inst.name)
        try:
            r = bench.run_step(inst.url, self.t.model.served_name, [prompt], output_len=self.t.benchmark.output_len,
                               concurrency=1, timeout_s=self.cfg.request_timeout_s, name="endurance").records[0]
        finally:
            with self.lock:
                self.in_flight.pop(ticket, None)
        sent = e.Sent(at_s=round(at, 3), wall=r.send_time, instance=inst.name, kind=kind, status=r.status,
                      ttft_s=r.ttft_s, latency_s=r.latency_s, cached_tokens=r.cached_tokens,
                      error=r.error and r.error[:300], job=job)
        with self.lock:
            self.series.records.append(sent)
            if len(self.series.records) >= self.cfg.max_requests:
                self.stop.set()
        return sent, r.output_text

    def job(self, j: Job) -> None:
        a, b = self.pair[j.first], self.pair[1 - j.first]
        n = self.t.benchmark.input_len
        prompt = self.prompts.fresh(n)
        if j.kind == "miss":
            self.send(a, prompt, "miss", j.number)
        elif j.kind == "local_hit":
            if self.send(a, prompt, "miss", j.number)[0].status == "ok" and not self.stop.is_set():
                self.send(a, prompt, "local_hit", j.number)
        elif j.kind == "cross_instance_hit":
            if self.send(a, prompt, "miss", j.number)[0].status == "ok" and not self.stop.is_set():
                self.send(b, prompt, "cross_instance_hit", j.number)
        else:  # a conversation: each turn on the other instance, so the grown prefix is read from the pool
            for turn in range(self.cfg.turns):
                if self.stop.is_set():
                    return
                got, answer = self.send(self.pair[(j.first + turn) % 2], prompt, "miss" if turn == 0 else "turn",
                                        j.number)
                if got.status != "ok":
                    return
                prompt = next_turn(prompt, answer, self.prompts.fresh(self.cfg.turn_tokens))

    def worker(self) -> None:
        while not self.stop.is_set():
            self.job(self.plan.next())

    # -- readings --

    def rss(self) -> dict[str, float]:
        """Each instance's and the master's process-group RSS, by name."""
        procs = [self.d.master, *(i.process for i in self.d.instances)]
        by_container: dict[str, tuple[Container, list]] = {}
        for pr in procs:
            by_container.setdefault(pr.container.name, (pr.container, []))[1].append(pr)
        out: dict[str, float] = {}
        for container, group in by_container.values():
            got = parse_rss(container.exec(["python3", "-c", RSS_SCRIPT, *(str(x.pid) for x in group)],
                                           timeout=20).output)
            for pr in group:
                if got.get(pr.pid):
                    out["master" if pr is self.d.master else pr.name] = got[pr.pid]
        return out

    def new_log(self, inst: serving.RunningInstance) -> str:
        """What the instance logged since the last reading (tail -c from the byte offset read so far)."""
        at = self.log_at.get(inst.name, 0)
        text = inst.process.container.exec(["tail", "-c", f"+{at + 1}", inst.process.log_path], timeout=30).output
        self.log_at[inst.name] = at + len(text.encode())
        return text

    def reading(self, start_s: float, end_s: float, master_before: dict[str, float] | None) -> tuple[e.Interval, dict]:
        with self.lock:
            records = list(self.series.records)
            waits = [end_s - at for at, _ in self.in_flight.values()]
        row = e.interval_row(records, start_s, end_s, time.time())
        row.in_flight, row.oldest_wait_s = len(waits), round(max(waits, default=0.0), 1)
        master: dict[str, float] = {}
        try:
            m = mooncake.master_metrics(self.t, timeout=3)
            master = m.by_name()
            row.pool_keys, row.pool_bytes = m.total("master_key_count"), m.total("master_allocated_bytes")
            if master_before is not None:
                row.evicted_keys = max(0.0, max(m.total(n) - master_before.get(n, 0.0) for n in
                                                ("master_evicted_key_count", "master_successful_evictions_total")))
                row.master_failures = e.master_failures(master_before, master)
        except Exception:  # noqa: BLE001 - a paused or restarting master is a reading of its own
            row.master_up = False
        for inst in self.pair:
            try:
                usage = serving.metrics(inst, timeout=3).series(KV_USAGE)
                if usage:
                    row.kv_usage[inst.name] = usage[0].value
            except Exception:  # noqa: BLE001 - an instance that does not answer shows in the requests' failures
                pass
            try:
                counts, lines = e.failure_counts(self.new_log(inst), self.t.mooncake.transfer_failure_patterns)
            except Exception:  # noqa: BLE001
                counts, lines = {}, []
            if counts:
                row.connector_failures[inst.name] = counts
            row.connector_lines += lines[:3]
        try:
            row.rss_bytes = self.rss()
        except Exception:  # noqa: BLE001
            pass
        return row, (master or master_before or {})

    def sampler(self) -> None:
        start = 0.0
        master: dict[str, float] | None = None
        try:
            master = mooncake.master_metrics(self.t, timeout=3).by_name()
        except Exception:  # noqa: BLE001
            pass
        while True:
            ended = self.stop.wait(max(0.0, start + self.cfg.interval_s - self.now()))
            end = self.now()
            row, master = self.reading(start, end, master)
            self.series.intervals.append(row)
            self.progress(row)
            start = end
            if ended:
                return

    def progress(self, row: e.Interval) -> None:
        with self.lock:
            n = len(self.series.records)
            failed = sum(r.failed for r in self.series.records)
        mem = ", ".join(f"{k} {v / e.MIB:.0f}" for k, v in row.rss_bytes.items()) or "unread"
        p99 = f"{row.ttft_p99_s * 1000:.0f} ms" if row.ttft_p99_s is not None else "-"
        wait = f", oldest wait {row.oldest_wait_s:.0f} s" if row.oldest_wait_s >= self.cfg.stall_s / 2 else ""
        log.info(f"{row.end_s:.0f}/{self.duration_s:.0f} s: {n} requests, {failed} failed, p99 TTFT {p99} in the "
                 f"last {row.end_s - row.start_s:.0f} s, memory MiB {mem}, pool keys "
                 f"{'-' if row.pool_keys is None else f'{row.pool_keys:.0f}'}{wait}"
                 + ("" if row.master_up else ", master /metrics unanswered"))

    # -- probes --

    def probe_once(self) -> e.ProbeRow:
        c = self.t.benchmark.correctness
        at, wall = self.now(), time.time()
        prompt = self.prompts.fresh(c.input_len)
        model = self.t.model.served_name

        # Under load the instance's prefix-cache counter moves with other requests, so it cannot split a hit into
        # local and pool tokens as stage 5's probe does: the peer never saw this fresh prompt, so whatever it had
        # cached came from the pool; the per-request cached_tokens stays exact.
        def ask(inst, role: str) -> probe.Answer:
            return probe.ask(inst.url, inst.name, model, prompt, c, role, self.cfg.request_timeout_s, Metrics)

        try:
            cold = ask(self.first, "cold")
            local = ask(self.first, "local_hit")
            time.sleep(self.cfg.probe_settle_s)
            pool = ask(self.peer, "pool_hit")
        except probe.ProbeError as err:
            return e.ProbeRow(round(at, 3), wall, "error", detail={"error": str(err)[:300]})
        row = probe.judge(len(self.series.probes), cold, local, pool)
        close = probe.closeness(local, pool)["verdict"] if row["verdict"] in ("equal", "differs") else None
        return e.ProbeRow(round(at, 3), wall, row["verdict"], close,
                          {k: row.get(k) for k in ("position", "cached_tokens", "why", "seconds")})

    def prober(self) -> None:
        while not self.stop.wait(self.cfg.probe_every_s):
            row = self.probe_once()
            self.series.probes.append(row)
            if row.verdict != "equal":
                log.info(f"probe at {row.at_s:.0f} s: {row.verdict} {row.detail}")

    # -- the whole run --

    def idle_held(self) -> dict[str, int | None]:
        out = {}
        for inst in self.pair:
            try:
                out[inst.name] = held_tokens(serving.metrics(inst))
            except Exception:  # noqa: BLE001
                out[inst.name] = None
        return out

    def run(self) -> Series:
        tokenize = bench.tokenize_via(self.first.url, self.t.model.served_name)
        [calibration] = bench.make_dataset(tokenize, num_prompts=1, input_len=self.t.benchmark.input_len,
                                           seed=self.cfg.seed)
        self.prompts = Prompts(self.cfg.seed, len(calibration) / self.t.benchmark.input_len)
        self.plan = Plan(self.cfg.seed, self.cfg.mix.model_dump())
        self.series.held_tokens_idle["before"] = self.idle_held()
        log.info(f"{self.series.concurrency} in flight over {self.first.name} and {self.peer.name} for "
                 f"{self.duration_s:.0f} s (at most {self.cfg.max_requests} requests); a row every "
                 f"{self.cfg.interval_s:g} s, a probe every {self.cfg.probe_every_s:g} s")
        self.t0, self.series.started_wall = time.monotonic(), time.time()
        threads = [threading.Thread(target=self.worker, name=f"endurance-{i}", daemon=True)
                   for i in range(self.series.concurrency)]
        threads += [threading.Thread(target=f, name=f"endurance-{f.__name__}", daemon=True)
                    for f in (self.sampler, self.prober)]
        for th in threads:
            th.start()
        try:
            self.stop.wait(self.duration_s)
        except BaseException:
            self.stop.set()  # Ctrl-C or SIGTERM: teardown stops the instances, which ends the requests in flight
            raise
        self.stop.set()
        for th in threads:  # each worker ends after its request in flight (request_timeout_s at most)
            th.join()
        time.sleep(self.cfg.probe_settle_s + 3)  # idle: blocks still held now are not in use
        self.series.held_tokens_idle["after"] = self.idle_held()
        with self.lock:
            self.series.records.sort(key=lambda r: r.at_s)
        return self.series


def judge(series: Series, cfg, warmup_s: float | None = None) -> dict[str, e.GateResult]:
    """The five gates over a run's series, by name; cfg is the target's endurance section."""
    w = cfg.warmup_s if warmup_s is None else warmup_s
    accept = ("equal",) if cfg.probe_accept == "equal" else ("equal", "close")
    gates = [e.error_budget(series.records, series.intervals, cfg.max_failed_per_1000, series.started_wall),
             e.no_stall(series.records, series.intervals, cfg.stall_s, series.started_wall),
             e.memory_growth(series.intervals, w, cfg.max_memory_slope_mib_per_min, series.started_wall),
             e.ttft_drift(series.records, series.intervals, w, cfg.drift_window_s, cfg.max_p99_drift,
                          series.started_wall),
             e.probes_equal(series.probes, accept, series.started_wall)]
    return {g.name: g for g in gates}
