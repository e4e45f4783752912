"""The cpu-local kit for real: the image (built if missing) imports vLLM and Mooncake, the NPU emulator in
it answers from the target YAML at run time, and the model builder gives the same bytes every time."""

import hashlib
import io
import tarfile
import time
from pathlib import Path

import docker
import pytest

from harness import hccn, kit
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
    c = client.containers.run(image, ["sleep", "infinity"], detach=True, init=True, network_disabled=True,
                              labels=LABEL, volumes={str(model): {"bind": "/model/qwen2-tiny", "mode": "ro"}})
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
