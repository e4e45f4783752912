"""The TTFT benchmark: a random-character dataset calibrated with the server's tokenizer, and a streaming client.

`make_dataset` builds prompts of exactly `input_len` tokens as the served tokenizer counts them (its
`POST /tokenize`, through `tokenize_via`), identical for the same seed and tokenizer, and sharing no
prefix so no prompt hits another's KV cache. `run_step` sends each prompt once to an instance's
`/v1/completions` with streaming on and records TTFT per request; a failed request is a record too. `warm_up` is
vllm-ascend's KV pool guide's warm-up before step 1 (benchmark.warmup).
"""

from __future__ import annotations

import json
import random
import statistics
import string
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import requests
from urllib3.exceptions import TimeoutError as Urllib3Timeout

# Random characters, with spaces and punctuation often enough to give the tokenizer word boundaries.
ALPHABET = string.ascii_letters + string.digits + ".,;:!?-()" + " " * 4
HEAD_CHARS = 8  # prompts differ within their first HEAD_CHARS characters
# The warm-up's prompts start with a character not in ALPHABET: their first block differs from every other prompt's
# in its first token, and every later block's hash chains from the first, so no block of theirs is another set's.
WARMUP_PREFIX = "~"
MAX_TOKENIZE_CALLS = 14  # per prompt, retries included
FIRST_CHARS_PER_TOKEN = 2.0  # a first guess only; corrected after the first tokenize call


# --- dataset ---------------------------------------------------------------------------------------------------


def tokenize_via(base_url: str, model: str, session: requests.Session | None = None,
                 timeout: float = 30) -> Callable[[str], int]:
    """A token counter backed by vLLM's `POST /tokenize` (special tokens included, as a completion counts them)."""
    http = session or requests.Session()
    url = base_url.rstrip("/") + "/tokenize"

    def count(text: str) -> int:
        r = http.post(url, json=tokenize_body(model, text), timeout=timeout)
        if r.status_code != 200:
            raise requests.HTTPError(f"POST {url} answered {r.status_code}: {r.text[:300]}", response=r)
        return int(r.json()["count"])

    return count


def tokenize_body(model: str, text: str) -> dict:
    return {"model": model, "prompt": text, "add_special_tokens": True}


class _Stream:
    """One prompt's characters, drawn lazily so the first n characters are the same however far we read."""

    def __init__(self, rng: random.Random):
        self._rng = rng
        self._chars: list[str] = []

    def text(self, n: int) -> str:
        while len(self._chars) < n:
            self._chars.extend(self._rng.choices(ALPHABET, k=256))
        return "".join(self._chars[:n])

    def replace(self, i: int) -> None:
        old = self._chars[i]
        while self._chars[i] == old:
            self._chars[i] = self._rng.choice(ALPHABET)


def _fit(stream: _Stream, tokenize: Callable[[str], int], target: int, chars_per_token: float,
         budget: int) -> tuple[str, int]:
    """The prefix of stream with exactly target tokens, and the tokenize calls it took.

    Token count grows roughly linearly with length but in steps, and not strictly (one more character
    can merge or split the last token), so this is a bracketing search: lo has fewer tokens than the
    target, hi more. When they are adjacent, the character at lo jumps past the target: it is redrawn.
    """
    counts: dict[int, int] = {0: 0}
    lo, hi = 0, None
    length = max(1, round(target * chars_per_token))
    tried: list[str] = []
    for calls in range(1, budget + 1):
        n = counts[length] = tokenize(stream.text(length))
        tried.append(f"{length} chars: {n}")
        if n == target:
            return stream.text(length), calls
        if n < target:
            lo = length
        else:
            hi = length
        if hi == lo + 1:
            stream.replace(lo)
            counts = {k: v for k, v in counts.items() if k <= lo}
            hi, length = None, lo + 1
            continue
        if hi is None:  # extrapolate from lo at its own chars-per-token
            rate = lo / counts[lo] if counts[lo] > 0 else chars_per_token
            length = lo + max(1, round((target - counts[lo]) * rate))
        else:  # interpolate inside the bracket
            guess = lo + round((target - counts[lo]) * (hi - lo) / (counts[hi] - counts[lo]))
            length = min(max(guess, lo + 1), hi - 1)
    raise ValueError(f"could not build a prompt of exactly {target} tokens within {budget} tokenize calls "
                     f"(tokens by length tried: {', '.join(tried) or 'none'})")


def make_dataset(tokenize: Callable[[str], int], *, num_prompts: int, input_len: int, seed: int,
                 prefix: str = "") -> list[str]:
    """num_prompts random-character prompts of exactly input_len tokens each by `tokenize`.

    Same seed and same tokenizer give the same bytes. Prompts are random from their first character and
    differ within their first HEAD_CHARS characters, so they share no prefix (no KV cache hit between them).
    `prefix` starts every prompt (counted in input_len): WARMUP_PREFIX keeps a set apart from every other.
    """
    if num_prompts < 0 or input_len < 1:
        raise ValueError(f"need num_prompts >= 0 and input_len >= 1, got {num_prompts} and {input_len}")
    if prefix:
        fitted = make_dataset(lambda text: tokenize(prefix + text), num_prompts=num_prompts, input_len=input_len,
                              seed=seed)
        return [prefix + text for text in fitted]
    rng = random.Random(seed)
    chars_per_token = FIRST_CHARS_PER_TOKEN
    prompts: list[str] = []
    heads: set[str] = set()
    for i in range(num_prompts):
        calls = 0
        while True:
            # Its own generator per prompt: redraws inside one prompt never shift the others.
            stream = _Stream(random.Random(rng.getrandbits(64)))
            text, used = _fit(stream, tokenize, input_len, chars_per_token, MAX_TOKENIZE_CALLS - calls)
            calls += used
            if text[:HEAD_CHARS] not in heads:
                break
            if calls >= MAX_TOKENIZE_CALLS:  # only very short prompts can collide
                raise ValueError(f"prompt {i}: could not make {input_len}-token prompts that all start "
                                 f"differently; input_len is too small for {num_prompts} prompts")
        heads.add(text[:HEAD_CHARS])
        prompts.append(text)
        chars_per_token = sum(map(len, prompts)) / (input_len * len(prompts))
    return prompts


# --- streaming client --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    index: int
    send_time: float  # epoch seconds, just before sending
    ttft_s: float | None  # None unless status is "ok"
    latency_s: float  # send to end of stream (or to the failure)
    output_text: str
    output_tokens: int
    # "ok", or the failure kind: http_<code>, timeout, connection, bad_json, stream_ended_early, no_tokens,
    # stream_error (the server sent an error event), error (anything else)
    status: str
    error: str | None = None
    prompt_tokens: int | None = None  # from the usage chunk, when the server sent one
    # usage.prompt_tokens_details.cached_tokens (--enable-prompt-tokens-details): prefix cache and connector
    cached_tokens: int | None = None

    @property
    def end_time(self) -> float:
        return self.send_time + self.latency_s


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0..100), numpy's (linear interpolation between closest ranks)."""
    if not values:
        raise ValueError("percentile of no values")
    return float(np.percentile(values, p))


@dataclass
class StepResult:
    name: str = ""
    records: list[RequestRecord] = field(default_factory=list)  # ordered by index
    started: float = 0.0  # epoch seconds
    ended: float = 0.0

    @property
    def ok(self) -> list[RequestRecord]:
        return [r for r in self.records if r.status == "ok"]

    @property
    def failures(self) -> list[RequestRecord]:
        return [r for r in self.records if r.status != "ok"]

    def ttfts(self) -> list[float]:
        return [r.ttft_s for r in self.ok if r.ttft_s is not None]

    def stats(self) -> dict[str, float | int | None]:
        """TTFT statistics in seconds over the ok requests (None when there are none), with the counts."""
        t = self.ttfts()
        out: dict[str, float | int | None] = {"count": len(self.records), "ok": len(self.ok),
                                              "failed": len(self.failures)}
        out["mean"] = statistics.fmean(t) if t else None
        for key, p in (("median", 50), ("p90", 90), ("p99", 99), ("min", 0), ("max", 100)):
            out[key] = percentile(t, p) if t else None
        return out

    def to_json_lines(self) -> str:
        return "".join(json.dumps({"step": self.name, **asdict(r)}) + "\n" for r in self.records)


def ratio(step: StepResult, baseline: StepResult) -> float:
    """Mean TTFT of step over mean TTFT of baseline."""
    for s, role in ((step, "step"), (baseline, "baseline")):
        if not s.ttfts():
            raise ValueError(f"{role} {s.name or '(unnamed)'} has no successful request "
                             f"({len(s.failures)} failed of {len(s.records)}): no mean TTFT to compare")
    return statistics.fmean(step.ttfts()) / statistics.fmean(baseline.ttfts())


def run_step(base_url: str, model: str, prompts: list[str], *, output_len: int, concurrency: int, timeout_s: float,
             session_factory: Callable[[], requests.Session] = requests.Session, name: str = "") -> StepResult:
    """Send each prompt once, at most `concurrency` in flight, and record TTFT. Never raises for a request."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    url = base_url.rstrip("/") + "/v1/completions"
    local = threading.local()
    sessions: list[requests.Session] = []
    lock = threading.Lock()

    def send(index: int, prompt: str) -> RequestRecord:
        session = getattr(local, "session", None)
        if session is None:  # one session (one kept-alive connection) per worker
            session = local.session = session_factory()
            with lock:
                sessions.append(session)
        return _request(session, url, stream_body(model, prompt, output_len), index, timeout_s)

    started = time.time()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ttft")
    try:
        records = list(pool.map(send, range(len(prompts)), prompts))
    except BaseException:
        # Ctrl-C or SIGTERM: drop the queued requests instead of sending them all before teardown can start;
        # the ones in flight end when teardown stops the instance.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=False)
        for session in sessions:
            session.close()
    return StepResult(name=name, records=records, started=started, ended=time.time())


def stream_body(model: str, prompt: str, output_len: int) -> dict:
    """One timed request of our client: greedy, exactly output_len tokens, streamed with its usage at the end."""
    return {"model": model, "prompt": prompt, "max_tokens": output_len, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}


def _request(session: requests.Session, url: str, payload: dict, index: int, timeout_s: float) -> RequestRecord:
    """One streamed completion. Read timeout bounds each silence; the deadline bounds a stream that trickles."""
    send_time = time.time()
    t0 = time.perf_counter()
    ttft: float | None = None
    parts: list[str] = []
    chunks = 0  # chunks with text: the token count when the server sends no usage
    usage: dict = {}
    done = False

    def record(status: str, error: str | None = None) -> RequestRecord:
        return RequestRecord(
            index=index, send_time=send_time, ttft_s=ttft if status == "ok" else None,
            latency_s=time.perf_counter() - t0, output_text="".join(parts),
            output_tokens=usage.get("completion_tokens", chunks), status=status, error=error,
            prompt_tokens=usage.get("prompt_tokens"),
            cached_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens"))

    try:
        with session.post(url, json=payload, stream=True, timeout=(timeout_s, timeout_s)) as r:
            if r.status_code != 200:
                return record(f"http_{r.status_code}", r.text[:300])
            for line in r.iter_lines():
                arrived = time.perf_counter()
                if arrived - t0 > timeout_s:
                    return record("timeout", f"stream not finished within {timeout_s} s")
                if not line.startswith(b"data:"):
                    continue  # blank event separators, SSE comments
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    continue  # read on to the end of the stream so the connection is reused
                try:
                    chunk = json.loads(data)
                    if "error" in chunk:
                        return record("stream_error", json.dumps(chunk["error"])[:300])
                    choices = chunk.get("choices") or []
                    text = (choices[0].get("text") or "") if choices else ""
                    if not isinstance(text, str):
                        raise TypeError(f"text is {type(text).__name__}")
                    usage = dict(chunk.get("usage") or usage)  # only the last chunk has usage
                except (ValueError, TypeError, AttributeError, KeyError) as e:
                    return record("bad_json", f"{type(e).__name__} on data line {data[:200]!r}")
                if text:
                    if ttft is None:
                        ttft = arrived - t0
                    chunks += 1
                    parts.append(text)
    except requests.Timeout as e:
        return record("timeout", str(e)[:300])
    except requests.exceptions.ChunkedEncodingError as e:  # the connection broke mid-stream
        return record("stream_ended_early", str(e)[:300])
    except requests.ConnectionError as e:
        # requests reports a read timeout while streaming as a ConnectionError wrapping urllib3's timeout.
        timed_out = any(isinstance(a, Urllib3Timeout) for a in e.args)
        return record("timeout" if timed_out else "connection", str(e)[:300])
    except Exception as e:  # a request must end as a record, whatever happened
        return record("error", f"{type(e).__name__}: {e}"[:300])
    if not done:
        return record("stream_ended_early", "the stream ended without data: [DONE]")
    if ttft is None:
        return record("no_tokens", f"the stream finished without any text ({usage.get('completion_tokens')} "
                      "completion tokens by its usage)")
    return record("ok")


# --- the guide's warm-up -------------------------------------------------------------------------------------------


def warm_up(urls: list[str], model: str, prompt_sets: list[list[str]], *, output_len: int, concurrency: int,
            timeout_s: float) -> list[tuple[int, int, StepResult]]:
    """The guide's warm-up: set k to instance k first (cold, so its KV is put into the pool), then to every other
    instance (read from the pool: transfers between the instances). (set, instance, result) for each sending, in
    order; a failed request is in its result, never raised."""
    sent = []
    for k, prompts in enumerate(prompt_sets):
        for i in [k, *(j for j in range(len(urls)) if j != k)]:
            sent.append((k, i, run_step(urls[i], model, prompts, output_len=output_len, concurrency=concurrency,
                                        timeout_s=timeout_s, name=f"warm-up set {k + 1}")))
    return sent
