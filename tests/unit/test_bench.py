"""The TTFT benchmark against a fake vLLM on localhost: exact calibrated prompts, what TTFT measures, failures."""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from harness.bench import (
    ALPHABET,
    MAX_TOKENIZE_CALLS,
    WARMUP_PREFIX,
    RequestRecord,
    StepResult,
    make_dataset,
    percentile,
    ratio,
    run_step,
    tokenize_via,
    warm_up,
)

# A toy tokenizer: letter runs of up to 4, digit runs of up to 3, punctuation with its leading space,
# whitespace runs. Token count grows with length in uneven steps, never exactly chars / N.
TOY = re.compile(r"[A-Za-z]{1,4}|\d{1,3}| ?[^\sA-Za-z\d]|\s+")


def toy_count(text: str) -> int:
    return 1 + len(TOY.findall(text))  # 1: the BOS token that add_special_tokens adds


def jumpy_count(text: str) -> int:
    """Every digit costs one token more: appending a digit can jump from input_len - 1 to input_len + 1."""
    return toy_count(text) + sum(c.isdigit() for c in text)


class FakeVllm(ThreadingHTTPServer):
    """vLLM's /tokenize and streaming /v1/completions. A prompt's first word picks the completion's behaviour."""

    daemon_threads = False  # server_close joins every handler thread: nothing is left running
    block_on_close = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.delay = 0.0  # before the first token
        self.gap = 0.0  # between tokens
        self.completions: list[dict] = []
        self.tokenized: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()  # ends every wait and stall at teardown

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up early is expected here
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, as uvicorn serves vLLM
    timeout = 5  # an idle kept-alive connection cannot hold the teardown for long

    def setup(self):
        super().setup()
        # Headers, body and events are separate small writes: without this, Nagle holds them ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        try:
            if self.path == "/tokenize":
                with self.server.lock:
                    self.server.tokenized.append(body)
                n = toy_count(body["prompt"]) - (0 if body.get("add_special_tokens") else 1)
                self.reply(200, {"count": n, "tokens": list(range(n)), "max_model_len": 4096})
            elif self.path == "/v1/completions":
                self.complete(body)
            else:
                self.reply(404, {"object": "error", "message": "Not Found"})
        except ConnectionError:
            self.close_connection = True  # the client gave up (its timeout)

    def reply(self, code: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def event(self, obj: dict) -> None:
        self.chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")

    def token(self, i: int, model: str) -> None:
        self.event({"id": "cmpl-1", "object": "text_completion", "model": model, "usage": None,
                    "choices": [{"index": 0, "text": f" t{i}", "logprobs": None, "finish_reason": None}]})

    def complete(self, body: dict) -> None:
        s = self.server
        with s.lock:
            s.completions.append(body)
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
        try:
            self.stream(body, body["prompt"].split(" ", 1)[0])
        finally:
            with s.lock:
                s.in_flight -= 1

    def stream(self, body: dict, mode: str) -> None:
        s, model = self.server, body["model"]
        if mode == "http500":
            return self.reply(500, {"object": "error", "message": "boom", "code": 500})
        if mode == "stallhead":  # no response at all
            s.stop.wait(30)
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.event({"choices": [{"index": 0, "text": ""}], "usage": None})  # empty text: not a token for TTFT
        if s.stop.wait(s.delay):
            return
        if mode == "stall":
            s.stop.wait(30)
            self.close_connection = True
            return
        if mode == "badjson":
            self.chunk(b'data: {"choices": [\n\n')
        if mode == "streamerror":
            self.event({"error": {"object": "error", "message": "engine dead", "code": 500}})
        if mode == "cut":  # connection closed mid-stream, no closing chunk
            self.token(0, model)
            self.close_connection = True
            return
        n = 0 if mode == "notokens" else 1 if mode == "early" else body["max_tokens"]
        for i in range(n):
            if i and s.stop.wait(0.2 if mode == "trickle" else s.gap):
                return
            self.token(i, model)
        if mode != "nousage":
            prompt_tokens = toy_count(body["prompt"])
            # As vLLM 0.32 with --enable-prompt-tokens-details: the cached part of the prompt, here a fixed 7 blocks.
            self.event({"choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n,
                                                 "total_tokens": prompt_tokens + n,
                                                 "prompt_tokens_details": {"cached_tokens": 896}}})
        if mode != "early":
            self.chunk(b"data: [DONE]\n\n")
        self.chunk(b"")  # the closing chunk: end of the stream


@pytest.fixture
def fake():
    server = FakeVllm()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()
    thread.join(5)
    assert not thread.is_alive()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- dataset -----------------------------------------------------------------------------------------------------


def counting(tokenize):
    """tokenize, with every text it was asked about kept in .calls."""
    def wrapped(text: str) -> int:
        wrapped.calls.append(text)
        return tokenize(text)
    wrapped.calls = []
    return wrapped


@pytest.mark.parametrize("input_len", [2, 7, 100, 1024])  # 2: one character and the BOS token
def test_every_prompt_has_exactly_input_len_tokens(input_len):
    prompts = make_dataset(toy_count, num_prompts=20, input_len=input_len, seed=0)
    assert len(prompts) == 20
    assert [toy_count(p) for p in prompts] == [input_len] * 20


def test_exact_even_when_no_prefix_length_fits():
    tokenize = counting(jumpy_count)
    prompts = make_dataset(tokenize, num_prompts=30, input_len=200, seed=3)
    assert [jumpy_count(p) for p in prompts] == [200] * 30
    # Some text asked about is neither a prefix nor an extension of any prompt: a last character was redrawn.
    assert any(not any(p.startswith(q) or q.startswith(p) for p in prompts) for q in tokenize.calls)


def test_few_tokenize_calls_per_prompt():
    tokenize = counting(toy_count)
    make_dataset(tokenize, num_prompts=50, input_len=1024, seed=1)
    assert len(tokenize.calls) / 50 <= 5


def test_unreachable_target_is_a_clear_error_after_bounded_calls():
    tokenize = counting(lambda text: 2 * toy_count(text))  # only even counts
    with pytest.raises(ValueError, match="exactly 101 tokens"):
        make_dataset(tokenize, num_prompts=3, input_len=101, seed=0)
    assert len(tokenize.calls) <= MAX_TOKENIZE_CALLS


def test_same_seed_same_prompts_other_seed_other_prompts():
    a = make_dataset(toy_count, num_prompts=20, input_len=100, seed=7)
    assert make_dataset(toy_count, num_prompts=20, input_len=100, seed=7) == a
    b = make_dataset(toy_count, num_prompts=20, input_len=100, seed=8)
    assert not set(a) & set(b)


def test_prompts_start_differently_from_the_first_character():
    prompts = make_dataset(toy_count, num_prompts=100, input_len=64, seed=0)
    assert len({p[:8] for p in prompts}) == 100
    assert len({p[0] for p in prompts}) > 30  # random from the first character, no common preamble
    assert all(re.fullmatch(r"[A-Za-z0-9.,;:!?() -]+", p) for p in prompts)


# --- the warm-up's prompts (benchmark.warmup) ---


def toy_tokens(text: str) -> list[str]:
    """The toy tokenizer's tokens themselves, the BOS first: what a block hash is computed over."""
    return ["<bos>", *TOY.findall(text)]


def block_keys(prompt: str, block: int) -> set[tuple[str, ...]]:
    """One key per full block: all tokens up to its end, as vLLM chains each block's hash on its parent's."""
    tokens = toy_tokens(prompt)
    return {tuple(tokens[:end]) for end in range(block, len(tokens) + 1, block)}


def shared_blocks(a: list[str], b: list[str], block: int) -> set[tuple[str, ...]]:
    return set().union(*(block_keys(p, block) for p in a)) & set().union(*(block_keys(p, block) for p in b))


@pytest.mark.parametrize("block", [1, 16])
def test_warm_up_prompts_share_no_block_with_dataset_a(block):
    dataset_a = make_dataset(toy_count, num_prompts=40, input_len=128, seed=20251)
    # Its own seed, and, to be sure, the same seed as dataset A: the prefix alone keeps every block apart, down to a
    # block of one token (the BOS, shared by every prompt, is not a full block of any prompt but a 1-token one).
    for seed in (8, 20251):
        warm = make_dataset(toy_count, num_prompts=16, input_len=128, seed=seed, prefix=WARMUP_PREFIX)
        assert [toy_count(p) for p in warm] == [128] * 16 and all(p.startswith(WARMUP_PREFIX) for p in warm)
        assert shared_blocks(warm, dataset_a, block) <= ({("<bos>",)} if block == 1 else set())
    # The negative control: without the prefix and with dataset A's seed, every block is shared.
    same = make_dataset(toy_count, num_prompts=16, input_len=128, seed=20251)
    every = set().union(*(block_keys(p, block) for p in same))
    assert len(every) > 16 and shared_blocks(same, dataset_a, block) == every


def test_warm_up_prompts_are_reproducible_and_never_in_the_alphabet_at_first():
    warm = make_dataset(toy_count, num_prompts=4, input_len=64, seed=8, prefix=WARMUP_PREFIX)
    assert make_dataset(toy_count, num_prompts=4, input_len=64, seed=8, prefix=WARMUP_PREFIX) == warm
    assert WARMUP_PREFIX not in ALPHABET


def test_warm_up_sends_each_set_to_its_instance_first_then_to_the_others(monkeypatch):
    sent = []
    monkeypatch.setattr("harness.bench.run_step", lambda url, model, prompts, **kw: sent.append((url, prompts[0]))
                        or step_of([0.1] * len(prompts), name=kw["name"]))
    out = warm_up(["http://i1", "http://i2", "http://i3"], "m", [["a"], ["b"], ["c"]], output_len=1, concurrency=2,
                  timeout_s=5)
    assert sent == [("http://i1", "a"), ("http://i2", "a"), ("http://i3", "a"), ("http://i2", "b"),
                    ("http://i1", "b"), ("http://i3", "b"), ("http://i3", "c"), ("http://i1", "c"),
                    ("http://i2", "c")]
    assert [(k, i) for k, i, _ in out][:3] == [(0, 0), (0, 1), (0, 2)] and out[3][2].name == "warm-up set 2"


def test_dataset_through_the_tokenize_endpoint(fake):
    with requests.Session() as session:
        prompts = make_dataset(tokenize_via(fake.url, "toy", session=session), num_prompts=5, input_len=64, seed=2)
    assert [toy_count(p) for p in prompts] == [64] * 5
    assert {(b["model"], b["add_special_tokens"]) for b in fake.tokenized} == {("toy", True)}
    assert prompts == make_dataset(toy_count, num_prompts=5, input_len=64, seed=2)


def test_tokenize_endpoint_error_is_raised(fake):
    with requests.Session() as session, pytest.raises(requests.HTTPError, match="404"):
        tokenize_via(fake.url + "/nope", "toy", session=session)("abc")


# --- streaming client ------------------------------------------------------------------------------------------


def test_ttft_is_the_first_text_and_the_record_is_complete(fake):
    fake.delay, fake.gap = 0.3, 0.05
    prompts = make_dataset(toy_count, num_prompts=4, input_len=32, seed=0)
    step = run_step(fake.url + "/", "toy", prompts, output_len=4, concurrency=4, timeout_s=5, name="cold")
    assert step.name == "cold" and [r.index for r in step.records] == [0, 1, 2, 3]
    for r in step.records:
        assert r.status == "ok" and r.error is None
        assert 0.3 <= r.ttft_s < 0.8  # the delay, not the empty chunk sent at once
        # The stream's 3 later gaps of 0.05 s come after the first text; a jitter of the first chunk's arrival
        # (measured: 0.9 ms on a loaded machine) must not fail it, a latency ending at the first text must.
        assert r.latency_s >= r.ttft_s + 3 * 0.05 - 0.03
        assert (r.output_text, r.output_tokens, r.prompt_tokens) == (" t0 t1 t2 t3", 4, 32)
        assert step.started <= r.send_time <= r.end_time <= step.ended
    # Each prompt sent once with the benchmark's body, and nothing else.
    assert not fake.tokenized
    assert sorted(fake.completions, key=lambda b: b["prompt"]) == [
        {"model": "toy", "prompt": p, "max_tokens": 4, "temperature": 0, "ignore_eos": True, "stream": True,
         "stream_options": {"include_usage": True}} for p in sorted(prompts)]


@pytest.mark.parametrize("concurrency, n", [(1, 3), (3, 9)])
def test_at_most_concurrency_requests_in_flight(fake, concurrency, n):
    fake.delay = 0.1
    step = run_step(fake.url, "toy", [f"p{i}" for i in range(n)], output_len=2, concurrency=concurrency, timeout_s=5)
    assert [r.status for r in step.records] == ["ok"] * n
    assert len(fake.completions) == n
    assert fake.max_in_flight == concurrency


def test_each_failure_is_recorded_and_the_step_returns(fake):
    kinds = {"fine": "ok", "nousage": "ok", "http500": "http_500", "badjson": "bad_json",
             "early": "stream_ended_early", "cut": "stream_ended_early", "notokens": "no_tokens",
             "streamerror": "stream_error"}
    step = run_step(fake.url, "toy", [f"{mode} x" for mode in kinds], output_len=3, concurrency=4, timeout_s=5)
    assert [r.status for r in step.records] == list(kinds.values())
    for r in step.failures:
        assert r.ttft_s is None and r.error
    assert "boom" in step.records[2].error
    assert step.records[1].output_tokens == 3  # counted from the text chunks when there is no usage
    assert step.records[0].cached_tokens == 896 and step.records[1].cached_tokens is None
    assert step.stats()["ok"] == 2 and step.stats()["failed"] == 6


def test_no_server_is_a_connection_failure():
    step = run_step(f"http://127.0.0.1:{free_port()}", "toy", ["a", "b"], output_len=1, concurrency=2, timeout_s=2)
    assert [r.status for r in step.records] == ["connection", "connection"]


def test_stalls_end_as_timeouts_in_about_timeout_s(fake):
    start = time.perf_counter()
    step = run_step(fake.url, "toy", ["stallhead x", "stall x", "trickle x"], output_len=50, concurrency=3,
                    timeout_s=0.5)
    assert [r.status for r in step.records] == ["timeout"] * 3
    for r in step.records:
        assert 0.5 <= r.latency_s < 1.0
    assert step.records[2].output_text.startswith(" t0 t1")  # what came before the deadline is kept
    assert time.perf_counter() - start < 1.5


# --- statistics --------------------------------------------------------------------------------------------------


def step_of(ttfts: list[float], failed: int = 0, name: str = "") -> StepResult:
    ok = [RequestRecord(i, 1000.0 + i, t, t + 1, "x", 1, "ok") for i, t in enumerate(ttfts)]
    bad = [RequestRecord(len(ttfts) + i, 1000.0, None, 0.5, "", 0, "timeout", "timed out") for i in range(failed)]
    return StepResult(name=name, records=ok + bad, started=1000.0, ended=1010.0)


def test_stats_by_linear_interpolation():
    step = step_of([4.0, 1.0, 10.0, 3.0, 2.0], failed=1)
    # sorted 1 2 3 4 10: p90 at rank 0.9 * 4 = 3.6 -> 4 + 0.6 * 6; p99 at rank 3.96 -> 4 + 0.96 * 6
    assert step.stats() == pytest.approx({"count": 6, "ok": 5, "failed": 1, "mean": 4.0, "median": 3.0,
                                          "p90": 7.6, "p99": 9.76, "min": 1.0, "max": 10.0})
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 90) == pytest.approx(3.7)  # rank 2.7
    assert percentile([5.0], 99) == 5.0
    assert step_of([], failed=2).stats() == {"count": 2, "ok": 0, "failed": 2, "mean": None, "median": None,
                                             "p90": None, "p99": None, "min": None, "max": None}


def test_json_lines_one_record_per_line():
    step = step_of([0.5, 0.7], failed=1, name="warm")
    lines = step.to_json_lines().splitlines()
    assert len(lines) == 3
    rows = [json.loads(line) for line in lines]
    assert [(r["step"], r["index"], r["status"], r["ttft_s"]) for r in rows] == [
        ("warm", 0, "ok", 0.5), ("warm", 1, "ok", 0.7), ("warm", 2, "timeout", None)]


def test_ratio_of_mean_ttfts():
    assert ratio(step_of([0.5, 1.5]), step_of([2.0, 6.0])) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="baseline cold has no successful request"):
        ratio(step_of([1.0]), step_of([], failed=3, name="cold"))
    with pytest.raises(ValueError, match="step"):
        ratio(step_of([]), step_of([1.0]))
