"""Fidelity of our TTFT client: the same prompts at the same concurrency, on the same instance, measured by
our client, by `vllm bench serve`, and by vLLM's own server-side TTFT histogram.

    python -m harness.fidelity --target cpu-local     (tox -e fidelity)

The instance runs without prefix caching and without the KV connector, so every run does the same work.
A warm-up (other prompts) pays the first-request costs first; then ours, vllm bench, ours again (ABA),
so slow drift of the machine does not favour either client. Writes reports/fidelity.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

import kit
from harness import bench, results, serving
from harness.config import ROOT, ConfigError, Target, load_target
from harness.interrupts import unwind_on_sigterm
from harness.runtime import Container, DeploymentError, start_container

PROMPTS_FILE = "/tmp/kvpool/fidelity-prompts.json"
RESULT_DIR, RESULT_FILE = "/tmp/kvpool", "vllm-bench.json"


def say(msg: str) -> None:
    print(f"[fidelity] {msg}", flush=True)


def fidelity_target(target: Target) -> Target:
    """Instance 1 alone, with prefix caching off and no KV connector."""
    x = target.instances[0]
    args = [a for a in x.args if a != "--enable-prefix-caching"] + ["--no-enable-prefix-caching"]
    return target.model_copy(update={"instances": [x.model_copy(update={"args": args, "kv_transfer_config": None})]})


def server_ttft(instance: serving.RunningInstance, before: dict[str, float]) -> float | None:
    return results.server_mean_ttft(results.delta(before, serving.metrics(instance), results.INSTANCE_EVIDENCE))


def ours(instance, target: Target, prompts: list[str]) -> dict:
    b = target.benchmark
    before = serving.metrics(instance)
    step = bench.run_step(instance.url, target.model.served_name, prompts, output_len=b.output_len,
                          concurrency=b.concurrency, timeout_s=b.request_timeout_s, name="ours")
    if step.failures:
        raise DeploymentError(f"our client: {len(step.failures)} failed requests, first {step.failures[0]}")
    return {"stats": step.stats(), "server_mean_ttft_s": server_ttft(instance, before)}


def vllm_bench(container: Container, instance, target: Target, prompts: list[str]) -> dict:
    b = target.benchmark
    # ShareGPT format replays a fixed prompt list as-is (no chat template, no shuffle, no oversampling).
    container.put_file(PROMPTS_FILE, json.dumps([
        {"id": str(i), "conversations": [{"from": "human", "value": p}, {"from": "gpt", "value": ""}]}
        for i, p in enumerate(prompts)]))
    argv = ["vllm", "bench", "serve", "--backend", "vllm", "--base-url", instance.url,
            "--endpoint", "/v1/completions", "--model", target.model_path(instance.spec),
            "--served-model-name", target.model.served_name, "--tokenizer", target.model_path(instance.spec),
            "--dataset-name", "sharegpt", "--dataset-path", PROMPTS_FILE, "--sharegpt-output-len", str(b.output_len),
            "--disable-shuffle", "--no-oversample", "--num-prompts", str(len(prompts)), "--ignore-eos",
            "--max-concurrency", str(b.concurrency), "--request-rate", "inf", "--num-warmups", "0",
            "--ready-check-timeout-sec", "0", "--temperature", "0",
            "--save-result", "--result-dir", RESULT_DIR, "--result-filename", RESULT_FILE]
    say("vllm " + shlex.join(argv[1:6]) + " ...")
    before = serving.metrics(instance)
    r = container.exec(argv, timeout=1800)
    server = server_ttft(instance, before)
    raw = container.read_file(f"{RESULT_DIR}/{RESULT_FILE}")
    if r.rc != 0 or raw is None:
        raise DeploymentError(f"vllm bench serve failed (exit {r.rc}):\n{r.output[-3000:]}")
    data = json.loads(raw)
    if data.get("completed") != len(prompts):
        raise DeploymentError(f"vllm bench serve completed {data.get('completed')} of {len(prompts)} prompts")
    return {"mean_ttft_s": data["mean_ttft_ms"] / 1e3, "median_ttft_s": data["median_ttft_ms"] / 1e3,
            "completed": data["completed"], "total_input_tokens": data.get("total_input_tokens"),
            "server_mean_ttft_s": server}


def measure(target: Target) -> dict:
    t = fidelity_target(target)
    container = start_container(kit.docker_client(), t, kit.ensure_kit(t), "fidelity")
    try:
        [instance] = serving.start_instances(container, t)  # stopped with the container
        serving.wait_ready([instance], say)
        b = t.benchmark
        tokenize = bench.tokenize_via(instance.url, t.model.served_name)
        prompts = bench.make_dataset(tokenize, num_prompts=b.num_prompts, input_len=b.input_len, seed=b.seed)
        warm = bench.make_dataset(tokenize, num_prompts=b.concurrency, input_len=b.input_len, seed=b.seed + 1)
        say(f"warm-up: {len(warm)} other prompts")
        bench.run_step(instance.url, t.model.served_name, warm, output_len=b.output_len, concurrency=b.concurrency,
                       timeout_s=b.request_timeout_s)
        runs = {}
        for name, run in (("ours_1", lambda: ours(instance, t, prompts)),
                          ("vllm_bench", lambda: vllm_bench(container, instance, t, prompts)),
                          ("ours_2", lambda: ours(instance, t, prompts))):
            start = time.monotonic()
            runs[name] = run()
            say(f"{name}: {time.monotonic() - start:.0f} s, {json.dumps(runs[name], default=str)[:300]}")
        return runs
    finally:
        container.remove()


def summarize(target: Target, runs: dict) -> dict:
    our_mean = (runs["ours_1"]["stats"]["mean"] + runs["ours_2"]["stats"]["mean"]) / 2
    our_server = (runs["ours_1"]["server_mean_ttft_s"] + runs["ours_2"]["server_mean_ttft_s"]) / 2
    b = target.benchmark
    return {
        "target": target.name, "num_prompts": b.num_prompts, "input_len": b.input_len, "output_len": b.output_len,
        "concurrency": b.concurrency, "ours_mean_ttft_s": our_mean, "vllm_bench_mean_ttft_s": runs["vllm_bench"][
            "mean_ttft_s"], "server_histogram_mean_ttft_s_during_ours": our_server,
        "ours_over_vllm_bench": our_mean / runs["vllm_bench"]["mean_ttft_s"],
        "ours_over_server_histogram": our_mean / our_server, "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cpu-local")
    parser.add_argument("--out", default=str(ROOT / "reports" / "fidelity.json"))
    args = parser.parse_args(argv)
    unwind_on_sigterm()
    try:
        target = load_target(args.target)
        summary = summarize(target, measure(target))
    except (ConfigError, DeploymentError, kit.KitError) as e:
        print(f"[fidelity] error: {e}", file=sys.stderr)
        return 1
    (ROOT / "reports").mkdir(exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=2)
    say(f"ours {summary['ours_mean_ttft_s'] * 1e3:.1f} ms, vllm bench {summary['vllm_bench_mean_ttft_s'] * 1e3:.1f} "
        f"ms, server histogram {summary['server_histogram_mean_ttft_s_during_ours'] * 1e3:.1f} ms")
    say(f"ours_over_vllm_bench = {summary['ours_over_vllm_bench']:.3f}, "
        f"ours_over_server_histogram = {summary['ours_over_server_histogram']:.3f} -> {args.out}")
    ok = all(0.95 <= summary[k] <= 1.05 for k in ("ours_over_vllm_bench", "ours_over_server_histogram"))
    say("both within 5%" if ok else "NOT within 5%")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
