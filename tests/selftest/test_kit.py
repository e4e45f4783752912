"""The cpu-local kit for real: the image (built if missing) imports vLLM and Mooncake, the NPU emulator in
it answers from the target YAML at run time, and the model builder gives the same bytes every time."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

import docker
import pytest

import kit
from harness import hccn
from harness.config import load_target, resolve_repo_path
from harness.emulator import STATE_PATH, render_state

pytestmark = pytest.mark.kit
LABEL = {"kvpool-acceptance": "selftest"}


@pytest.fixture(scope="module")
def target():
    return load_target("cpu-local")


@pytest.fixture(scope="module")
def image(target):
    return kit.ensure_kit(target)  # builds what is missing, so a fresh machine tests the build too


@pytest.fixture(scope="module")
def container(image, target):
    client = docker.from_env()
    model = resolve_repo_path(target.model.build.output)
    # The target's shm size: vLLM's engine needs more /dev/shm than Docker's default 64 MiB.
    c = client.containers.run(image, ["sleep", "infinity"], detach=True, init=True, network_disabled=True,
                              labels=LABEL, shm_size=target.container.shm_size,
                              volumes={str(model): {"bind": "/model/qwen2-tiny", "mode": "ro"}})
    yield c
    c.remove(force=True)


def put_file(container, path: str, text: str) -> None:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo(Path(path).name)
        info.size = len(text.encode())
        tar.addfile(info, io.BytesIO(text.encode()))
    container.exec_run(["mkdir", "-p", str(Path(path).parent)])
    assert container.put_archive(str(Path(path).parent), data.getvalue())


def run(container, *argv: str) -> str:
    rc, out = container.exec_run(list(argv))
    text = out.decode(errors="replace")
    assert rc == 0, f"{' '.join(argv)} exited {rc}:\n{text[-2000:]}"
    return text


def test_image_is_tagged_by_its_inputs(image, target):
    name, tag = image.rsplit(":", 1)
    assert name == target.container.image and len(tag) == 12
    assert image == kit.image_tag(target, kit.ensure_base(docker.from_env()))


def test_vllm_and_mooncake_import(container):
    out = run(container, "python", "-c",
              "import vllm, mooncake.store, importlib.metadata as m;"
              "print(vllm.__version__, m.version('mooncake-transfer-engine-non-cuda'), mooncake.store.__file__)")
    assert out.split()[:2] == ["0.32.0", "0.3.13.post1"], out
    assert "mooncake/store" in out


def test_vllm_cli_and_mooncake_master_run(container):
    assert "0.32.0" in run(container, "vllm", "--version")
    assert "mooncake_master version 0.3.13" in run(container, "mooncake_master", "--version")


def test_emulator_answers_from_the_yaml_at_run_time(container, target):
    emu = target.npu.emulator
    put_file(container, STATE_PATH, render_state(emu))
    assert run(container, target.npu.hccn_tool, "-i", "5", "-link", "-g") == "link status: UP\n"
    down = emu.model_copy(update={"devices": {**emu.devices, 5: emu.devices[5].model_copy(update={"link": "DOWN"})}})
    put_file(container, STATE_PATH, render_state(down))  # a YAML change, no rebuild
    assert run(container, target.npu.hccn_tool, "-i", "5", "-link", "-g") == "link status: DOWN\n"
    assert run(container, target.npu.hccn_tool, "-i", "4", "-link", "-g") == "link status: UP\n"
    rows = hccn.parse_npu_smi_info(run(container, target.npu.npu_smi, "info"))
    assert [r.npu for r in rows] == target.npu.devices


def test_served_tokenizer_counts_random_characters(container, target):
    out = run(container, "python", "-c",
              "import random, string; from transformers import AutoTokenizer;"
              f"t = AutoTokenizer.from_pretrained({target.model.path!r});"
              "r = random.Random(0); s = ''.join(r.choice(string.ascii_letters + string.digits) for _ in range(4000));"
              "print(len(t(s).input_ids))")
    assert 500 < int(out.strip().splitlines()[-1]) < 4000


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".kit-hash"}


def test_model_build_is_deterministic(image, target, tmp_path):
    """Same recipe, same image -> byte-identical model: rebuild into a scratch folder and compare."""
    spec = target.model.build
    client = docker.from_env()
    start = time.monotonic()
    c = client.containers.run(image, ["python", "/recipe/build_model.py", "--out", "/out/again"], detach=True,
                              network_disabled=True, labels=LABEL, volumes={
                                  str(resolve_repo_path(spec.recipe)): {"bind": "/recipe", "mode": "ro"},
                                  str(tmp_path): {"bind": "/out", "mode": "rw"}})
    try:
        rc = c.wait(timeout=600)["StatusCode"]
        logs = c.logs().decode(errors="replace")
    finally:
        c.remove(force=True)
    assert rc == 0, logs[-2000:]
    print(f"model rebuilt in {time.monotonic() - start:.1f} s")
    assert file_hashes(tmp_path / "again") == file_hashes(resolve_repo_path(spec.output))


PREFILL_PROBE = r"""
import json, random, statistics, sys, time, urllib.request
base, n = "http://127.0.0.1:18002", int(sys.argv[1])
deadline = time.monotonic() + 300
while True:  # vLLM answers /health 200 once the engine is up
    try:
        if urllib.request.urlopen(base + "/health", timeout=5).status == 200:
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("vllm serve not healthy after 300 s")
    time.sleep(1)
rng, times, tokens, generated = random.Random(7), [], [], []
for _ in range(4):  # fresh random token ids each time: no prefix-cache hit
    ids = [rng.randrange(256, 8000) for _ in range(n)]
    body = json.dumps({"model": "qwen", "prompt": ids, "max_tokens": 1, "temperature": 0}).encode()
    req = urllib.request.Request(base + "/v1/completions", body, {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    out = json.load(urllib.request.urlopen(req, timeout=120))
    times.append(time.perf_counter() - t0)
    tokens.append(out["usage"]["prompt_tokens"])
    generated.append(out["usage"]["completion_tokens"])
print(json.dumps({"seconds": times, "prompt_tokens": tokens, "completion_tokens": generated}))
"""


def test_vllm_serves_the_model_and_prefill_time_is_reported(image, target, container):
    """vllm serve loads the built model on one core; the 1024-token prefill time is printed, not asserted."""
    model = target.model.path
    dtype = target.instances[0].arg("--dtype", default="auto")  # the instances' own: bf16 is ~10x slower on AVX2 only
    container.exec_run(["sh", "-c", f"VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=0 vllm serve {model} "
                        f"--served-model-name qwen --host 127.0.0.1 --port 18002 --dtype {dtype} "
                        "--max-model-len 4096 --enforce-eager --block-size 128 > /tmp/serve.log 2>&1"],
                       detach=True)
    rc, out = container.exec_run(["python", "-c", PREFILL_PROBE, str(target.benchmark.input_len)])
    text = out.decode(errors="replace")
    if rc != 0:
        log = container.exec_run(["tail", "-n", "40", "/tmp/serve.log"]).output.decode(errors="replace")
        pytest.fail(f"vllm serve on the built model failed: {text[-1000:]}\nserve log tail:\n{log}")
    result = json.loads(text.strip().splitlines()[-1])
    assert result["prompt_tokens"] == [target.benchmark.input_len] * 4
    assert result["completion_tokens"] == [1] * 4
    warm = sorted(result["seconds"][1:])
    print(f"prefill of {target.benchmark.input_len} tokens on one core: {warm[len(warm) // 2]:.3f} s median "
          f"(first {result['seconds'][0]:.3f} s; all {[round(s, 3) for s in result['seconds']]})")
