"""aisbench (PyPI `ais-bench-benchmark`), the seed's recommended benchmark, as the load generator of one step.

One step is one `ais_bench --mode perf` run with the seed's settings, on our fixed prompts:
- the model is our copy of its vLLM completions stream config (`VLLMCustomAPI`, `/v1/completions`, stream): its
  chat configs apply a chat template, which adds input tokens beyond the 1024 (and the tiny tokenizer has none);
  batch_size = concurrency, max_out_len, temperature 0, ignore_eos, request_rate 0, retry 1 (its retry is the
  number of attempts, not of retries);
- --num-warmups 0: its default warm-up request would put a prompt's KV in the cache before the cold step;
- the dataset is a config whose template is the bare prompt: its synthetic generators draw new unseeded prompts
  every run (steps 2 and 3 would never hit), and its custom-dataset path wraps each line in "Question: ...
  \\nAnswer: ".
Its per-request details (`<work>/<time>/performances/<model>/<dataset>_details.jsonl`, time points in the SQLite
file they reference) become our RequestRecords, so the evidence, thresholds and reports are the same whichever
client ran. Its TTFT is its own: the first streamed data line of any kind; ours is the first non-empty text.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from harness import hostrun
from harness.bench import RequestRecord, StepResult
from harness.progress import logger

log = logger("client")  # a step's end, as the load generator reports it: a [client] line
MODEL_CONFIG = "kvpool_vllm_stream"  # not the package's file name, so aisbench does not warn of two matches
MODEL_ABBR = "kvpool-vllm-stream"
API_MODULE = "kvpool_aisbench_api"
# vllm-ascend's nightly harness counts any ERROR line of aisbench's output as a failed run.
# Its log lines are coloured ("[\x1b[31mERROR\x1b[0m]"): matched without the colour codes.
ERROR_LINE = re.compile(r"\bERROR\b")
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Also keeps usage.prompt_tokens_details.cached_tokens, which the stock class drops: the step's cached_tokens
# evidence needs it per request. Nothing of the request or its timing changes.
API_SOURCE = '''\
from ais_bench.benchmark.models import VLLMCustomAPI
from ais_bench.benchmark.registry import MODELS


@MODELS.register_module()
class KVPoolVLLMCustomAPI(VLLMCustomAPI):
    async def _parse_usage(self, json_content, output):
        await super()._parse_usage(json_content, output)
        details = (json_content.get("usage") or {}).get("prompt_tokens_details") or {}
        if "cached_tokens" in details:
            output.extra_details_data["cached_tokens"] = details["cached_tokens"]
'''


class AisbenchError(hostrun.ClientError):
    pass


def model_config(url: str, served_name: str, tokenizer: str, *, output_len: int, concurrency: int) -> str:
    where = urlsplit(url)
    return f'''\
from {API_MODULE} import KVPoolVLLMCustomAPI

models = [
    dict(
        attr="service",
        type=KVPoolVLLMCustomAPI,
        abbr={MODEL_ABBR!r},
        path={tokenizer!r},
        model={served_name!r},
        stream=True,
        request_rate=0,
        use_timestamp=False,
        retry=1,
        api_key="",
        host_ip={where.hostname!r},
        host_port={where.port},
        url="",
        max_out_len={output_len},
        batch_size={concurrency},
        trust_remote_code=False,
        generation_kwargs=dict(temperature=0, ignore_eos=True),
    )
]
'''


def dataset_config(name: str, jsonl: Path) -> str:
    return f'''\
from ais_bench.benchmark.datasets import CustomDataset
from ais_bench.benchmark.openicl.icl_evaluator import AccEvaluator
from ais_bench.benchmark.openicl.icl_inferencer import GenInferencer
from ais_bench.benchmark.openicl.icl_prompt_template import PromptTemplate
from ais_bench.benchmark.openicl.icl_retriever import ZeroRetriever

{name}_datasets = [
    dict(
        abbr={name!r},
        type=CustomDataset,
        path={str(jsonl)!r},
        reader_cfg=dict(input_columns=["question", "max_out_len"], output_column="answer"),
        infer_cfg=dict(prompt_template=dict(type=PromptTemplate, template="{{question}}"),
                       retriever=dict(type=ZeroRetriever), inferencer=dict(type=GenInferencer)),
        eval_cfg=dict(evaluator=dict(type=AccEvaluator), pred_role="BOT"),
    )
]
'''


def dataset_name(step: str) -> str:
    """The step's dataset name for aisbench: its config names a Python variable `<name>_datasets` after it."""
    return re.sub(r"\W", "_", step)


def write_inputs(work: Path, name: str, url: str, served_name: str, tokenizer: str, prompts: list[str], *,
                 output_len: int, concurrency: int) -> Path:
    """The config dir of one run: our model config, its API class, and the step's prompts as a dataset."""
    configs = configs_dir(work)
    (configs / "models").mkdir(parents=True, exist_ok=True)
    (configs / "datasets").mkdir(parents=True, exist_ok=True)
    (configs / f"{API_MODULE}.py").write_text(API_SOURCE)
    (configs / "models" / f"{MODEL_CONFIG}.py").write_text(
        model_config(url, served_name, tokenizer, output_len=output_len, concurrency=concurrency))
    jsonl = work / f"{name}.jsonl"
    jsonl.write_text("".join(json.dumps({"question": p, "answer": "", "max_out_len": output_len}) + "\n"
                             for p in prompts))
    (configs / "datasets" / f"{name}.py").write_text(dataset_config(name, jsonl))
    return configs


def configs_dir(work: Path) -> Path:
    return work / "configs"


def command_env(configs: Path) -> dict[str, str]:
    """What aisbench's environment adds to ours: our config dir on its path (our API class), no progress bars."""
    return {"PYTHONPATH": str(configs), "TQDM_DISABLE": "1"}


def command(venv: Path, work: Path, configs: Path, name: str, num_prompts: int) -> list[str]:
    return [str(venv / "bin" / "ais_bench"), "--models", MODEL_CONFIG, "--datasets", name, "--config-dir",
            str(configs), "--mode", "perf", "--summarizer", "default_perf", "--num-prompts", str(num_prompts),
            "--num-warmups", "0", "--work-dir", str(work / "out")]


def _numpy_blobs(db: Path) -> dict[int, np.ndarray]:
    with sqlite3.connect(db) as conn:
        return {i: np.load(io.BytesIO(blob), allow_pickle=False)
                for i, blob in conn.execute("SELECT id, arr_blob FROM numpy_store")}


def details_file(out: Path, name: str) -> Path:
    found = sorted(out.glob(f"*/performances/{MODEL_ABBR}/{name}_details.jsonl"))
    if not found:
        raise AisbenchError(f"aisbench wrote no {name}_details.jsonl under {out}/*/performances/{MODEL_ABBR}/")
    return found[-1]


def _time_points(d: dict, folder: Path, blobs: dict[str, dict[int, np.ndarray]]) -> np.ndarray:
    """A request's time points: inline, or a reference into the SQLite file it names (read once per file); empty
    when it has none."""
    ref = d.get("time_points")
    if isinstance(ref, dict) and "__db_ref__" in ref:
        db = d.get("db_name") or ""
        if db not in blobs:
            path = folder / "db_data" / db
            blobs[db] = _numpy_blobs(path) if db and path.is_file() else {}
        ref = blobs[db].get(ref["__db_ref__"])
    return np.asarray(ref if ref is not None else [], dtype=np.float64)


def records(details: Path, prompts: list[str], started: float) -> list[RequestRecord]:
    """Our records from aisbench's details, in prompt order. Its time points are perf_counter readings: send times
    are placed on the epoch clock relative to the step's start (`started`, epoch seconds)."""
    lines = [json.loads(line) for line in details.read_text().splitlines() if line.strip()]
    blobs: dict[str, dict[int, np.ndarray]] = {}
    timed = [(d, _time_points(d, details.parent, blobs)) for d in lines]
    zero = min((tp[0] for _, tp in timed if len(tp)), default=0.0)
    index = {p: i for i, p in enumerate(prompts)}
    out: dict[int, RequestRecord] = {}
    for d, tp in timed:
        prompt = d.get("input")
        i = index.get(prompt) if isinstance(prompt, str) else None
        if i is None:
            raise AisbenchError(f"aisbench sent a prompt that is not one of the step's: {str(prompt)[:80]!r}")
        if i in out:
            raise AisbenchError(f"aisbench sent prompt {i} twice")
        ok = bool(d.get("success")) and len(tp) >= 2
        out[i] = RequestRecord(
            index=i, send_time=float(started + (tp[0] if len(tp) else zero) - zero),
            ttft_s=float(tp[1] - tp[0]) if ok else None, latency_s=float(tp[-1] - tp[0]) if len(tp) else 0.0,
            output_text=d.get("prediction") or "", output_tokens=int(d.get("output_tokens") or 0),
            status="ok" if ok else "aisbench_failed",
            error=None if ok else (d.get("error_info") or "no time points")[:300],
            prompt_tokens=d.get("input_tokens") or None,
            cached_tokens=(d.get("extra_details_data") or {}).get("cached_tokens"))
    for i in range(len(prompts)):  # a request aisbench never reported is a failure, not a gap
        if i not in out:
            out[i] = RequestRecord(index=i, send_time=started, ttft_s=None, latency_s=0.0, output_text="",
                                   output_tokens=0, status="aisbench_missing", error="aisbench reported no request")
    return [out[i] for i in sorted(out)]


UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def seconds(value: str) -> float:
    """A time of aisbench's summary ("2463.1 ms") in seconds."""
    m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*(us|ms|s)\s*", str(value))
    if not m:
        raise AisbenchError(f"aisbench time {value!r} is not a number with a unit (us, ms, s)")
    return float(m.group(1)) * UNIT_S[m.group(2)]


def summary_mean_ttft(details: Path, name: str) -> float | None:
    """aisbench's own TTFT average, in seconds, from its summary CSV beside the details (`TTFT,total,47559.9 ms,...`
    under `Performance Parameters,Stage,Average,...`); None when it wrote none."""
    summary = details.parent / f"{name}.csv"
    if not summary.is_file():
        return None
    rows = list(csv.DictReader(summary.read_text().splitlines()))
    ttft = next((r for r in rows if r.get("Performance Parameters") == "TTFT" and r.get("Stage") == "total"), None)
    return seconds(ttft["Average"]) if ttft and ttft.get("Average") else None


def check_against_summary(result: StepResult, own_mean_s: float | None) -> None:
    """Our reading of its details must give its own TTFT average (it prints 0.1 ms): else we read them wrong."""
    ours = result.stats()["mean"]
    if own_mean_s is not None and ours is not None and abs(ours - own_mean_s) > 0.0005 + 0.001 * own_mean_s:
        raise AisbenchError(f"aisbench's own TTFT average is {own_mean_s * 1e3:.1f} ms but its per-request details "
                            f"read {ours * 1e3:.1f} ms: its output format is not the one harness/aisbench.py knows")


def run_step(venv: Path, work: Path, url: str, served_name: str, tokenizer: str, prompts: list[str], *,
             output_len: int, concurrency: int, timeout_s: float, name: str) -> StepResult:
    """One step through aisbench. Raises AisbenchError when aisbench itself fails (exit code, an ERROR line);
    requests that failed are records, as with our client."""
    work.mkdir(parents=True, exist_ok=True)
    ds = dataset_name(name)
    configs = write_inputs(work, ds, url, served_name, tokenizer, prompts, output_len=output_len,
                           concurrency=concurrency)
    argv = command(venv, work, configs, ds, len(prompts))
    env = {**os.environ, **command_env(configs)}
    log_file = work / "aisbench.log"
    rc, started, ended = hostrun.run_step_command(argv, log_file, cwd=work, env=env, request_timeout_s=timeout_s,
                                                  num_prompts=len(prompts), concurrency=concurrency)
    text = ANSI.sub("", log_file.read_text(errors="replace"))
    errors = [line for line in text.splitlines() if ERROR_LINE.search(line)]
    if rc != 0 or errors:
        shown = "\n".join(errors[:5]) if errors else hostrun.tail(log_file)
        raise AisbenchError(f"aisbench failed (exit {rc}{f', {len(errors)} ERROR lines' if errors else ''}); "
                            f"log {log_file}:\n{shown}")
    details = details_file(work / "out", ds)
    result = StepResult(name=name, records=records(details, prompts, started), started=started, ended=ended)
    own = summary_mean_ttft(details, ds)
    check_against_summary(result, own)
    log.info(f"aisbench {name}: {ended - started:.0f} s, its own TTFT average {own} s")
    return result
