"""The load generators other than ours (harness/clients.py, aisbench.py, vllm_bench.py, kit/clients.py): choosing one,
what they are given, how their failures are told, and how their recorded outputs become our records."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from commands import fidelity
from harness import aisbench, bench, clients, hostrun, vllm_bench
from harness.config import ROOT, Target, load_target
from harness.waiting import wait_until
from kit import clients as kit_clients
from kit.build import KitError

from .test_config import problems, raw

REC = Path(__file__).parent / "recordings"


def test_the_client_is_ours_unless_the_target_says_otherwise(tmp_path):
    assert load_target("cpu-local").benchmark.client == "ours"
    d = raw("cpu-local")
    d["benchmark"]["client"] = "locust"
    found = problems(tmp_path, d)
    assert [f for f, _ in found] == ["benchmark.client"] and "'ours', 'aisbench' or 'vllm-bench'" in found[0][1]


def test_an_unknown_client_is_refused_by_name(tmp_path):
    with pytest.raises(clients.ClientError, match="unknown client 'locust'; choose one of ours, aisbench, vllm-bench"):
        kit_clients.prepare("locust", load_target("cpu-local"), tmp_path)


def test_the_tokenizer_is_found_on_the_host_through_the_volumes():
    t = load_target("cpu-local")
    assert t.host_model_path(t.instances[0]) == ROOT / ".cache" / "models" / "qwen2-tiny"
    elsewhere = t.instances[0].model_copy(update={"model_path": "/opt/other-model"})
    assert t.host_model_path(elsewhere) is None


class FakeContainer:
    """A model folder as `ls` shows it in the container; copy_out writes the file's name as its content."""

    def __init__(self, listing: str, rc: int = 0):
        self.listing, self.rc, self.copied = listing, rc, []

    def exec(self, argv):
        from harness.runtime import ExecResult
        return ExecResult(self.rc, self.listing)

    def copy_out(self, path, dest):
        self.copied.append(path)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / Path(path).name).write_text(path)


def instance_in(t, container):
    class Process:
        pass

    class Instance:
        name, spec, url, process = "instance-1", t.instances[0], "http://127.0.0.1:1", Process()

    Instance.process.container = container
    return Instance()


def atlas_like(tmp_path):
    """cpu-local with its model in no volume, as the Atlas target's /model/Qwen2.5-72B-Instruct/ is."""
    t = load_target("cpu-local")
    return t.model_copy(update={"container": t.container.model_copy(update={"volumes": []})})


def test_a_model_in_no_volume_has_its_tokenizer_copied_out_of_the_container_not_its_weights(tmp_path):
    t = atlas_like(tmp_path)
    c = FakeContainer("config.json\ngeneration_config.json\nmodel-00001-of-00031.safetensors\n"
                      "model.safetensors.index.json\ntokenizer.json\ntokenizer_config.json\nvocab.json\nmerges.txt\n")
    load = clients.LoadGenerator("aisbench", t, tmp_path, tmp_path)
    folder = load.tokenizer(instance_in(t, c))
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "generation_config.json", "merges.txt",
                                                        "tokenizer.json", "tokenizer_config.json", "vocab.json"]
    assert load.tokenizer(instance_in(t, c)) == folder and len(c.copied) == 6  # once


def test_a_client_without_any_tokenizer_says_where_it_looked(tmp_path):
    t = atlas_like(tmp_path)
    load = clients.LoadGenerator("aisbench", t, tmp_path, tmp_path)
    with pytest.raises(clients.ClientError, match="aisbench needs the model's tokenizer on the host: /model/qwen2-tiny "
                                                  "is in no container.volumes entry, and in the container"):
        load.run_step(instance_in(t, FakeContainer("ls: cannot access '/model/qwen2-tiny'", rc=2)), ["x"], "cold")


def test_vllm_bench_reports_no_cached_tokens_so_that_evidence_is_absent_not_zero(tmp_path):
    t = load_target("cpu-local")
    assert clients.LoadGenerator("ours", t, None, tmp_path).reports_cached_tokens
    assert clients.LoadGenerator("aisbench", t, None, tmp_path).reports_cached_tokens
    assert not clients.LoadGenerator("vllm-bench", t, None, tmp_path).reports_cached_tokens


# --- aisbench: inputs ---------------------------------------------------------------------------------------------

def test_aisbench_gets_the_seeds_settings_and_no_warm_up(tmp_path):
    configs = aisbench.write_inputs(tmp_path, "cold", "http://127.0.0.1:8002", "qwen", "/tok", ["a b", 'c "d"'],
                                    output_len=10, concurrency=10)
    model = (configs / "models" / f"{aisbench.MODEL_CONFIG}.py").read_text()
    for setting in ("batch_size=10", "max_out_len=10", "retry=1", "request_rate=0", "stream=True",
                    "generation_kwargs=dict(temperature=0, ignore_eos=True)", "host_port=8002",
                    "host_ip='127.0.0.1'", "model='qwen'", "path='/tok'"):
        assert setting in model
    compile(model, "model", "exec")
    dataset = (configs / "datasets" / "cold.py").read_text()
    assert 'template="{question}"' in dataset  # the bare prompt: no "Question: ... Answer: " around it
    compile(dataset, "dataset", "exec")
    lines = [json.loads(x) for x in (tmp_path / "cold.jsonl").read_text().splitlines()]
    assert [x["question"] for x in lines] == ["a b", 'c "d"'] and {x["max_out_len"] for x in lines} == {10}
    argv = aisbench.command(Path("/venv"), tmp_path, configs, "cold", 2)
    assert argv[argv.index("--num-warmups") + 1] == "0" and argv[argv.index("--num-prompts") + 1] == "2"
    assert argv[argv.index("--mode") + 1] == "perf"


def test_any_step_name_gives_a_dataset_config_that_python_reads(tmp_path):
    name = aisbench.dataset_name("run2-aisbench")
    compile(aisbench.dataset_config(name, tmp_path / "x.jsonl"), "dataset", "exec")
    assert name == "run2_aisbench" and aisbench.dataset_name("local_hit") == "local_hit"


def test_aisbench_times_carry_units():
    assert aisbench.seconds("2463.1 ms") == pytest.approx(2.4631)
    assert aisbench.seconds("12 s") == 12.0 and aisbench.seconds("850 us") == pytest.approx(0.00085)
    with pytest.raises(aisbench.AisbenchError, match="is not a number with a unit"):
        aisbench.seconds("fast")


def fake_venv(tmp_path: Path, tool: str, script: str) -> Path:
    """A venv whose `tool` is a Python script: what the real one prints and writes, without the real one."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    exe = bin_dir / tool
    exe.write_text(f"#!{sys.executable}\n{script}")
    exe.chmod(0o755)
    return tmp_path / "venv"


def test_an_error_line_of_aisbench_fails_the_step_even_with_exit_0(tmp_path):
    # As aisbench prints it: coloured level names.
    venv = fake_venv(tmp_path, "ais_bench",
                     "print('[2026-12-01 21:21:52,780] [ais_bench] [\\x1b[32mINFO\\x1b[0m] ok')\n"
                     "print('[2026-12-01 21:21:53,001] [ais_bench] [\\x1b[31mERROR\\x1b[0m] [ICLR-TYPE-001] bad')")
    with pytest.raises(aisbench.AisbenchError, match=r"(?s)aisbench failed \(exit 0, 1 ERROR lines\).*ICLR-TYPE-001"):
        aisbench.run_step(venv, tmp_path / "w", "http://127.0.0.1:1", "m", "/tok", ["p"], output_len=1,
                          concurrency=1, timeout_s=5, name="cold")


def test_a_client_that_hangs_is_killed_with_its_children_and_named(tmp_path):
    venv = fake_venv(tmp_path, "vllm", "import subprocess, time\n"
                     "child = subprocess.Popen(['sleep', '60'])\n"
                     "open('child.pid', 'w').write(str(child.pid))\ntime.sleep(60)")
    with pytest.raises(hostrun.Overdue, match=r"vllm did not finish within 2 s"):
        hostrun.run_logged([str(venv / "bin" / "vllm")], tmp_path / "log", timeout_s=2, cwd=tmp_path)
    child = Path(f"/proc/{int((tmp_path / 'child.pid').read_text())}/stat")
    # Its child went with it: gone, or dead and waiting to be reaped by whoever adopted it.
    assert wait_until(lambda: not child.exists() or child.read_text().split(") ")[1][0] in "ZX", timeout_s=5,
                      interval_s=0.1)


def test_vllm_bench_failing_shows_its_last_lines(tmp_path):
    venv = fake_venv(tmp_path, "vllm", "import sys\nprint('ValueError: no such tokenizer')\nsys.exit(2)")
    with pytest.raises(vllm_bench.VllmBenchError, match=r"(?s)failed \(exit 2\).*no such tokenizer"):
        vllm_bench.run_step(venv, tmp_path / "w", "http://127.0.0.1:1", "m", "/tok", ["p"], output_len=1,
                            concurrency=1, timeout_s=5, name="cold")


def test_vllm_bench_result_of_another_size_is_refused():
    with pytest.raises(vllm_bench.VllmBenchError, match="reported 1 requests, the step sent 2"):
        vllm_bench.records({"ttfts": [0.1], "errors": [""], "generated_texts": ["x"]}, 2, 0.0)
    with pytest.raises(vllm_bench.VllmBenchError, match="--save-detailed"):
        vllm_bench.records({"mean_ttft_ms": 1.0}, 2, 0.0)


# --- install ------------------------------------------------------------------------------------------------------

def test_an_install_that_cannot_be_done_says_what_and_where_and_is_redone_next_time(tmp_path, monkeypatch):
    monkeypatch.setattr(kit_clients, "CLIENTS_DIR", tmp_path)
    with pytest.raises(KitError, match=r"could not install broken into .*broken: broken pip install failed"):
        kit_clients.ensure_venv("broken", ["--no-index", "no-such-package-kvpool==1"], [])
    assert not (tmp_path / "broken" / kit_clients.STAMP).exists()  # incomplete: not taken for installed


def test_an_installed_venv_is_kept_until_its_inputs_change(tmp_path, monkeypatch):
    monkeypatch.setattr(kit_clients, "CLIENTS_DIR", tmp_path)
    lock = tmp_path / "req.txt"
    lock.write_text("")
    venv = kit_clients.ensure_venv("empty", ["-r", str(lock)], [lock])
    marker = venv / "kept"
    marker.write_text("")
    assert kit_clients.ensure_venv("empty", ["-r", str(lock)], [lock]) == venv and marker.exists()
    lock.write_text("# changed\n")
    kit_clients.ensure_venv("empty", ["-r", str(lock)], [lock])
    assert not marker.exists()  # rebuilt from scratch


def test_the_aisbench_lock_pins_every_package_and_a_cpu_torch():
    lines = [x for x in kit_clients.AISBENCH_LOCK.read_text().splitlines() if x.strip() and not x.startswith("#")]
    assert all("==" in x for x in lines), [x for x in lines if "==" not in x]
    pins = {name.lower().replace("_", "-"): v for name, v in (x.split("==", 1) for x in lines)}
    assert pins["ais-bench-benchmark"] == "3.1.20260630" and pins["torch"].endswith("+cpu")
    assert pins["pyarrow"] == "19.0.1" and pins["numpy"].startswith("1.")
    assert not [p for p in pins if p.startswith(("nvidia-", "triton"))]
    assert "/opt/" not in kit_clients.AISBENCH_LOCK.read_text()  # no path of the machine it was made on


# --- fidelity -----------------------------------------------------------------------------------------------------

def test_fidelity_clients_avoid_the_instances_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})  # an 8-CPU machine
    t = load_target("cpu-local")  # instance-1: VLLM_CPU_OMP_THREADS_BIND "0"
    assert fidelity.client_cpus(t) == {1, 2, 3, 4, 5, 6, 7}  # 0-7 without 0

    def bound(bind: str) -> Target:
        return t.model_copy(update={"instances": [t.instances[0].model_copy(
            update={"env": {**t.instances[0].env, "VLLM_CPU_OMP_THREADS_BIND": bind}})]})

    assert fidelity.client_cpus(bound("0-2|5,7")) == {3, 4, 6}  # 0-7 without 0, 1, 2 (0-2), 5 and 7
    assert fidelity.client_cpus(bound("0-7")) == {0, 1, 2, 3, 4, 5, 6, 7}  # none left: all of them, not none


def measured_order(monkeypatch, tmp_path) -> list[tuple[str, str, int]]:
    """Which client fidelity.measure runs when, on which prompts: (client, label, id of the prompts) per run, with
    the container, the instance and the clients' own work stood in for."""
    runs = []

    class Load:
        def __init__(self, name):
            self.name = name

    def timed(load, instance, prompts, label, concurrency):
        runs.append((load.name, label, id(prompts)))
        return {"client": load.name, "stats": {"mean": 0.1}, "server_mean_ttft_s": 0.1, "seconds": 1.0,
                "load": {"span_s": 1.0, "in_flight_mean": 1.0, "first_wave_s": 0.0}}

    class Container:
        def remove(self):
            runs.append(("container removed", "", 0))

    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: None)
    monkeypatch.setattr(fidelity, "WORK", tmp_path)
    monkeypatch.setattr(fidelity, "timed", timed)
    monkeypatch.setattr(fidelity, "start_container", lambda *a: Container())
    monkeypatch.setattr(fidelity.kit, "docker_client", lambda: None)
    monkeypatch.setattr(fidelity.kit, "ensure_kit", lambda target: "image")
    monkeypatch.setattr(fidelity.kit_clients, "prepare", lambda name, target, work: Load(name))
    monkeypatch.setattr(fidelity.serving, "start_instances", lambda containers, target: [SimpleNamespace(url="u")])
    monkeypatch.setattr(fidelity.serving, "wait_ready", lambda instances: None)
    monkeypatch.setattr(bench, "tokenize_via", lambda url, name: None)
    monkeypatch.setattr(bench, "make_dataset", lambda tokenize, num_prompts, input_len, seed: [f"prompt {seed}"])
    monkeypatch.setattr(bench, "run_step", lambda *a, **k: None)
    fidelity.measure(fidelity.fidelity_target(load_target("cpu-local"), 4))
    return runs


def mirror_problems(runs: list[tuple[str, str, int]]) -> list[str]:
    """Why a sequence of runs is not every client twice in mirrored order on the same prompts, then the teardown."""
    names = [name for name, _, _ in runs[:-1]]
    problems = []
    if names != names[::-1]:
        problems.append(f"not mirrored: {names}")
    if sorted(names) != sorted(clients.CLIENTS * 2):
        problems.append(f"not each of {clients.CLIENTS} twice: {names}")
    if len({prompts for _, _, prompts in runs[:-1]}) != 1:
        problems.append("not the same prompts in every run")
    if runs[-1][0] != "container removed":
        problems.append(f"the container was not removed last: {runs[-1]}")
    return problems


def test_fidelity_runs_every_client_twice_in_mirrored_order(monkeypatch, tmp_path):
    runs = measured_order(monkeypatch, tmp_path)
    assert mirror_problems(runs) == [], runs
    assert [label for _, label, _ in runs[:2]] == ["run1-ours", "run2-aisbench"]


def test_negative_control_an_unmirrored_order_is_caught(monkeypatch, tmp_path):
    monkeypatch.setattr(fidelity, "ORDER", ("ours", "aisbench", "vllm-bench") * 2)  # ABCABC: drift favours the last
    assert mirror_problems(measured_order(monkeypatch, tmp_path)) == [
        "not mirrored: ['ours', 'aisbench', 'vllm-bench', 'ours', 'aisbench', 'vllm-bench']"]


def test_fidelity_target_has_no_prefix_cache_no_connector_and_the_asked_prompts():
    t = fidelity.fidelity_target(load_target("cpu-local"), 20)
    [x] = t.instances
    assert "--no-enable-prefix-caching" in x.args and "--enable-prefix-caching" not in x.args
    assert x.kv_transfer_config is None and t.benchmark.num_prompts == 20
    assert isinstance(t, Target)


# --- aisbench: its real output (cpu-local cold step, vLLM 0.32, 40 x 1024 tokens, concurrency 10) ----------------

AIS = REC / "aisbench-3.1.20260630"


def test_aisbench_details_become_our_records_in_prompt_order():
    details = AIS / "cold_details.jsonl"
    lines = [json.loads(x) for x in details.read_text().splitlines()]
    prompts = [d["input"] for d in sorted(lines, key=lambda d: d["id"])]
    recs = aisbench.records(details, prompts, started=1000.0)
    assert [r.index for r in recs] == list(range(40)) and all(r.status == "ok" for r in recs)
    assert {r.prompt_tokens for r in recs} == {1024} and {r.output_tokens for r in recs} == {10}
    assert {r.cached_tokens for r in recs} == {0}  # kept by our API subclass: a cold step has none
    assert recs[0].output_text == lines[0]["prediction"] and min(r.send_time for r in recs) == pytest.approx(1000.0)
    # TTFT from its time points equals its own summary's average (47559.9 ms in cold.csv)
    result = bench.StepResult(name="cold", records=recs)
    own = aisbench.summary_mean_ttft(details, "cold")
    assert own == pytest.approx(47.5599) and result.stats()["mean"] == pytest.approx(own, abs=1e-4)
    aisbench.check_against_summary(result, own)


def test_a_misread_of_aisbench_output_is_caught_by_its_own_summary():
    details = AIS / "cold_details.jsonl"
    prompts = [d["input"] for d in sorted(map(json.loads, details.read_text().splitlines()), key=lambda d: d["id"])]
    recs = aisbench.records(details, prompts, started=0.0)
    shifted = [r.__class__(**{**r.__dict__, "ttft_s": r.ttft_s * 1.01}) for r in recs]  # e.g. a wrong time point
    with pytest.raises(aisbench.AisbenchError,
                       match="own TTFT average is 47559.9 ms but its per-request details read 48035.5 ms"):
        aisbench.check_against_summary(bench.StepResult(records=shifted), aisbench.summary_mean_ttft(details, "cold"))


def test_aisbench_sending_a_prompt_not_of_the_step_is_refused():
    details = AIS / "cold_details.jsonl"
    with pytest.raises(aisbench.AisbenchError, match="sent a prompt that is not one of the step's"):
        aisbench.records(details, ["another prompt"], started=0.0)


def test_a_prompt_aisbench_never_reported_is_a_failed_record(tmp_path):
    lines = (AIS / "cold_details.jsonl").read_text().splitlines()
    (tmp_path / "db_data").mkdir()
    (tmp_path / "db_data" / "bb6cbf7f.db").write_bytes((AIS / "db_data" / "bb6cbf7f.db").read_bytes())
    (tmp_path / "cold_details.jsonl").write_text("\n".join(lines[1:]) + "\n")
    prompts = [d["input"] for d in sorted(map(json.loads, lines), key=lambda d: d["id"])]
    recs = aisbench.records(tmp_path / "cold_details.jsonl", prompts, started=0.0)
    first = json.loads(lines[0])["id"]
    assert recs[first].status == "aisbench_missing" and len(recs) == 40


def test_a_healthy_aisbench_log_has_no_error_line():
    text = aisbench.ANSI.sub("", (AIS / "aisbench-cold.log").read_text())
    assert "[INFO]" in text and not [x for x in text.splitlines() if aisbench.ERROR_LINE.search(x)]


def test_fidelity_judges_clients_each_over_the_server_of_its_own_runs():
    # The server's own mean moved 63.3 -> 66.7 s between a run of ours and one of aisbench (measured on cpu-local,
    # AVX2): the clients each stayed within 0.03% of it. That is a faithful client, and the summary says so.
    def run(client, mean, server):
        return {"client": client, "stats": {"mean": mean}, "server_mean_ttft_s": server,
                "load": {"in_flight_mean": 9.5}}

    runs = [run("ours", 63.3586, 63.3428), run("aisbench", 66.6942, 66.6854), run("vllm-bench", 64.0, 63.99),
            run("vllm-bench", 64.0, 63.99), run("aisbench", 66.6942, 66.6854), run("ours", 63.3586, 63.3428)]
    s = fidelity.summarize(fidelity.fidelity_target(load_target("cpu-local"), 10), {"runs": runs, "client_cpus": [1]})
    assert s["ours_over_aisbench"] == pytest.approx(0.95, abs=0.001)  # raw: the server's drift
    assert s["ours_over_aisbench_server_normalized"] == pytest.approx(1.0001, abs=0.0002)
    assert all(s["within_goals"].values())
    runs[0] = run("ours", 66.0, 63.3428)  # our client adds 4% of its own
    runs[-1] = run("ours", 66.0, 63.3428)
    s = fidelity.summarize(fidelity.fidelity_target(load_target("cpu-local"), 10), {"runs": runs, "client_cpus": [1]})
    assert not s["within_goals"]["ours_over_server_histogram"]


def test_fidelity_load_shape_tells_a_burst_from_a_slow_sender():
    def step(sends):  # four requests of 2 s each at concurrency 2
        return bench.StepResult(records=[bench.RequestRecord(index=i, send_time=t, ttft_s=1.0, latency_s=2.0,
                                                             output_text="x", output_tokens=1, status="ok")
                                         for i, t in enumerate(sends)])

    burst = fidelity.load_shape(step([100.0, 100.0, 102.0, 102.0]), concurrency=2)
    assert burst == {"span_s": 4.0, "in_flight_mean": 2.0, "first_wave_s": 0.0, "mean_latency_s": 2.0}
    slow = fidelity.load_shape(step([100.0, 101.0, 103.0, 104.0]), concurrency=2)  # 1 s late to fill each slot
    assert slow["span_s"] == 6.0 and slow["in_flight_mean"] == pytest.approx(1.33, abs=0.01)
    assert slow["first_wave_s"] == 1.0


def test_vllm_bench_detailed_result_becomes_our_records():
    # `vllm bench serve --save-detailed` of vLLM 0.32 on cpu-local: 10 prompts of 1024 tokens at concurrency 10.
    data = json.loads((REC / "vllm-0.32.0" / "vllm-bench-serve-detailed.json").read_text())
    recs = vllm_bench.records(data, 10, started=500.0)
    assert [r.index for r in recs] == list(range(10)) and all(r.status == "ok" for r in recs)
    assert {r.prompt_tokens for r in recs} == {1024} and {r.output_tokens for r in recs} == {10}
    assert all(r.cached_tokens is None for r in recs)  # it keeps no usage: the evidence says absent, not 0
    assert min(r.send_time for r in recs) == pytest.approx(500.0)
    assert bench.StepResult(records=recs).stats()["mean"] * 1e3 == pytest.approx(data["mean_ttft_ms"])
    failed = {**data, "errors": ["Bad Request"] + data["errors"][1:]}
    assert vllm_bench.records(failed, 10, 0.0)[0].status == "vllm_bench_failed"


def test_clients_that_cannot_install_on_the_host_are_refused_with_the_reason():
    from harness.clients import unavailable
    from harness.config import load_target

    atlas, cpu = load_target("atlas-800t-a2"), load_target("cpu-local")
    assert unavailable("ours", atlas, "aarch64", (3, 9)) is None
    assert unavailable("aisbench", cpu, "x86_64", (3, 11)) is None  # what its lock pins
    reason = unavailable("aisbench", atlas, "aarch64", (3, 11))
    assert "pinned for CPython 3.11 on x86_64" in reason and "aarch64 with Python 3.11" in reason
    assert "Python 3.9" in unavailable("aisbench", cpu, "x86_64", (3, 9))
    assert unavailable("vllm-bench", cpu, "x86_64", (3, 11)) is None
    assert "atlas-800t-a2 brings its image" in unavailable("vllm-bench", atlas, "x86_64", (3, 11))
