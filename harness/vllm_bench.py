"""`vllm bench serve` (vLLM's own benchmark) as the load generator of one step, run on the host from a venv with the
target's vLLM version (kit/clients.py).

Our prompts go in as a ShareGPT file, which it replays as-is (no chat template, no shuffle, no oversampling), at
the step's concurrency with every request sent at once (request rate inf), no warm-up, greedy, ignore EOS.
`--save-detailed` keeps the per-request TTFTs, texts and errors, which become our RequestRecords. Its TTFT is the
first chunk that has choices, even with empty text; ours is the first non-empty text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness import hostrun
from harness.bench import RequestRecord, StepResult
from harness.progress import logger

log = logger("client")  # a step's end, as the load generator reports it: a [client] line
RESULT = "vllm-bench.json"
COMMAND_ENV = {"HF_HUB_OFFLINE": "1"}  # what its environment adds to ours: the tokenizer is a local folder


class VllmBenchError(hostrun.ClientError):
    pass


def sharegpt(prompts: list[str]) -> str:
    return json.dumps([{"id": str(i), "conversations": [{"from": "human", "value": p}, {"from": "gpt", "value": ""}]}
                       for i, p in enumerate(prompts)])


def command(venv: Path, work: Path, url: str, served_name: str, tokenizer: str, num_prompts: int, *,
            output_len: int, concurrency: int) -> list[str]:
    return [str(venv / "bin" / "vllm"), "bench", "serve", "--backend", "vllm", "--base-url", url,
            "--endpoint", "/v1/completions", "--model", served_name, "--served-model-name", served_name,
            "--tokenizer", tokenizer, "--dataset-name", "sharegpt", "--dataset-path", str(work / "prompts.json"),
            "--sharegpt-output-len", str(output_len), "--disable-shuffle", "--no-oversample",
            "--num-prompts", str(num_prompts), "--ignore-eos", "--max-concurrency", str(concurrency),
            "--request-rate", "inf", "--num-warmups", "0", "--ready-check-timeout-sec", "0", "--temperature", "0",
            "--save-result", "--save-detailed", "--result-dir", str(work), "--result-filename", RESULT]


def records(data: dict, num_prompts: int, started: float) -> list[RequestRecord]:
    """Our records from its detailed result: its lists are in request order, which is our prompt order."""
    ttfts, errors, texts = data.get("ttfts"), data.get("errors"), data.get("generated_texts")
    if not (isinstance(ttfts, list) and isinstance(errors, list) and isinstance(texts, list)):
        raise VllmBenchError("vllm bench serve's result has no per-request ttfts/errors/generated_texts "
                             "(--save-detailed)")
    if not len(ttfts) == len(errors) == len(texts) == num_prompts:
        raise VllmBenchError(f"vllm bench serve reported {len(ttfts)} requests, the step sent {num_prompts}")
    n = num_prompts
    starts = data.get("start_times") or [None] * n
    latencies = data.get("latencies") or [0.0] * n
    out_lens = data.get("output_lens") or [0] * n
    in_lens = data.get("input_lens") or [None] * n
    zero = min((s for s in starts if s), default=0.0)
    out = []
    for i in range(n):
        ok = not errors[i]
        out.append(RequestRecord(
            index=i, send_time=started + ((starts[i] or zero) - zero), ttft_s=float(ttfts[i]) if ok else None,
            latency_s=float(latencies[i] or 0.0), output_text=texts[i] or "", output_tokens=int(out_lens[i] or 0),
            status="ok" if ok else "vllm_bench_failed", error=None if ok else str(errors[i])[-300:],
            prompt_tokens=in_lens[i]))
    return out


def run_step(venv: Path, work: Path, url: str, served_name: str, tokenizer: str, prompts: list[str], *,
             output_len: int, concurrency: int, timeout_s: float, name: str) -> StepResult:
    """One step through `vllm bench serve`. Raises VllmBenchError when it fails as a whole; failed requests are
    records."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "prompts.json").write_text(sharegpt(prompts))
    (work / RESULT).unlink(missing_ok=True)
    argv = command(venv, work, url, served_name, tokenizer, len(prompts), output_len=output_len,
                   concurrency=concurrency)
    log_file = work / "vllm-bench.log"
    env = {**os.environ, **COMMAND_ENV}
    rc, started, ended = hostrun.run_step_command(argv, log_file, cwd=work, env=env, request_timeout_s=timeout_s,
                                                  num_prompts=len(prompts), concurrency=concurrency)
    result = work / RESULT
    if rc != 0 or not result.is_file():
        raise VllmBenchError(f"vllm bench serve failed (exit {rc}); log {log_file}:\n{hostrun.tail(log_file)}")
    data = json.loads(result.read_text())
    log.info(f"vllm bench {name}: {ended - started:.0f} s, its own mean TTFT {data.get('mean_ttft_ms')} ms")
    return StepResult(name=name, records=records(data, len(prompts), started), started=started, ended=ended)
