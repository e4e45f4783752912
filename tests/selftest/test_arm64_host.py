"""The README's Atlas steps on an emulated Atlas host without NPUs (tests/selftest/arm64_host.py: arm64 Debian
bullseye, Python 3.9, under qemu; this machine's Docker): a copy of this checkout, the example site file filled in,
`scripts/setup` for it, the preflight, the unit tests.

Set up for a site, the host gets a venv of aarch64 wheels only and nothing of cpu-local; the preflight is red on
exactly the NPU pieces the host lacks (device files, driver, hccn_tool, npu-smi, hccn.conf) and on nothing else. The
site's image is a stand-in: a small local image with an importable `mooncake` package, since the real one is an
NPU image of several GB; beside it a Mooncake-less stand-in, which the preflight must tell apart."""

from __future__ import annotations

import os
import re
import subprocess

import docker
import pytest
from docker.errors import ImageNotFound

from commands.preflight import LocalDocker, run_preflight
from harness.config import ROOT, load_target
from harness.progress import line
from kit import build

from . import arm64_host

pytestmark = pytest.mark.kit

NPU_PIECES = {"npu devices", "npu driver", "hccn_tool", "npu-smi", "hccn.conf"}
WITH_MOONCAKE = "kvpool-standin-site:with-mooncake"
WITHOUT_MOONCAKE = "kvpool-standin-site:without-mooncake"
# A package named mooncake with a store module, where python3 finds it: what the preflight's import needs.
STANDIN = "FROM {base}\nRUN {make}\n"
MAKE_MOONCAKE = ("d=$(python3 -c 'import site; print(site.getsitepackages()[0])')/mooncake && mkdir -p $d "
                 "&& touch $d/__init__.py $d/store.py")


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    """The two stand-in site images, built from the kit's Debian base (python3, no network needed)."""
    client = docker.from_env()
    base = build.ensure_base(client)
    for tag, make in ((WITH_MOONCAKE, MAKE_MOONCAKE), (WITHOUT_MOONCAKE, "true")):
        context = tmp_path_factory.mktemp("standin")
        (context / "Dockerfile").write_text(STANDIN.format(base=base, make=make))
        subprocess.run(["docker", "build", "--network", "none", "-q", "-t", tag, str(context)], check=True,
                       capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    yield
    for tag in (WITH_MOONCAKE, WITHOUT_MOONCAKE):
        try:
            client.images.remove(tag, force=True)
        except ImageNotFound:
            pass


def site_file(weights, image: str) -> str:
    """examples/atlas-site.yaml with its SITE values filled in for this emulated host: loopback, the stand-in image
    (which has Mooncake: no derived image), a weights folder, and segments this 24 GiB machine can hold."""
    text = (ROOT / "examples" / "atlas-site.yaml").read_text()
    text = text.replace("192.0.2.10", "127.0.0.1").replace("name: my-atlas", "name: emulated-atlas")
    text = re.sub(r"(?m)^  image: .*$", f"  image: {image}", text)
    text = re.sub(r"(?m)^  derive: .*$", "  derive: null", text)
    text = text.replace("{host: /data/models,", f"{{host: {weights},")
    assert "127.0.0.1" in text and image in text and str(weights) in text, "examples/atlas-site.yaml changed shape"
    # 8 ranks x (1 GiB segment + 1 GiB local buffer) fit in this machine; the seed's 100 GiB do not.
    return text.replace("  config:\n", "  config:\n    global_segment_size: 1073741824\n", 1)


@pytest.fixture(scope="module")
def host(tmp_path_factory, standins):
    """The emulated host with this checkout (as a fresh clone would have it) in a work folder, and the site file."""
    fs = arm64_host.rootfs()
    work = tmp_path_factory.mktemp("atlas")
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    checkout = work / "kvpool"
    for name in filter(None, (f.decode() for f in files)):
        if (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            (checkout / name).write_bytes((ROOT / name).read_bytes())
            (checkout / name).chmod((ROOT / name).stat().st_mode)
    weights = work / "weights" / "Qwen2.5-72B-Instruct"
    weights.mkdir(parents=True)
    (weights / "config.json").write_text('{"architectures": ["Qwen2ForCausalLM"]}\n')
    (checkout / "site.yaml").write_text(site_file(weights.parent, WITH_MOONCAKE))
    return fs, work, checkout


@pytest.fixture(scope="module")
def set_up(host):
    fs, work, checkout = host
    images_before = {i.id for i in docker.from_env().images.list()}
    run = arm64_host.run(fs, work, "uname -m; python3 --version; scripts/setup site.yaml", cwd=checkout, timeout=3600)
    print(run.stdout[-4000:])
    return run, images_before


def test_setup_for_a_site_on_aarch64_python39_builds_nothing_of_cpu_local(host, set_up):
    fs, work, checkout = host
    run, images_before = set_up
    assert run.returncode == 0, f"scripts/setup site.yaml failed (exit {run.returncode}):\n{run.stdout[-4000:]}"
    assert run.stdout.startswith("aarch64\nPython 3.9."), run.stdout[:200]
    assert f"next, check this host: .venv/bin/python -m commands.preflight --target {checkout}/site.yaml" in run.stdout
    kit_lines = line("kit", "")  # the kit's progress (harness/progress.py): "[kit] "
    assert kit_lines not in run.stdout and not (checkout / ".cache" / "kit").exists(), "setup built a kit for a site"
    assert {i.id for i in docker.from_env().images.list()} - images_before == set(), "setup made an image"


def test_the_sites_venv_holds_no_x86_wheel(host, set_up):
    fs, work, checkout = host
    tags = arm64_host.run(fs, work, "cat .venv/lib/python3.9/site-packages/*.dist-info/WHEEL | grep '^Tag:'",
                          cwd=checkout, timeout=300)
    assert tags.returncode == 0, tags.stdout
    platforms = {line.split("-")[-1] for line in tags.stdout.split()} - {"Tag:"}
    assert not [p for p in platforms if "x86" in p or "amd64" in p], platforms
    assert any("aarch64" in p for p in platforms), f"no aarch64 wheel at all: {platforms}"


def test_preflight_is_red_on_exactly_the_missing_npu_pieces(host, set_up):
    fs, work, checkout = host
    run = arm64_host.run(fs, work, ".venv/bin/python -m commands.preflight --target site.yaml || echo rc=$?",
                         cwd=checkout, timeout=900)
    print(run.stdout)
    problems = set(re.findall(r"(?m)^PROBLEM +([^:]+):", run.stdout))
    assert run.stdout.rstrip().endswith("rc=1"), run.stdout
    assert problems == NPU_PIECES, run.stdout
    assert re.search(r"(?m)^ok +architecture: aarch64$", run.stdout), run.stdout
    assert re.search(r"(?m)^ok +python: 3\.9\.", run.stdout), run.stdout
    assert re.search(r"(?m)^ok +mooncake import:", run.stdout), run.stdout


def test_the_unit_tests_pass_on_the_emulated_host(host, set_up, tier):
    """The landing tier runs the preflight's unit tests (a minute under qemu); the full tier every unit test."""
    fs, work, checkout = host
    which = "tests/unit" if tier == "full" else "tests/unit/test_preflight.py"
    run = arm64_host.run(fs, work, f".venv/bin/python -m pytest -q -p no:cacheprovider {which}", cwd=checkout,
                         timeout=5400)
    assert run.returncode == 0, run.stdout[-4000:]
    assert re.search(r"\d+ passed", run.stdout), run.stdout[-2000:]


def test_preflight_tells_a_mooncake_less_image_from_a_good_one(tmp_path, standins):
    """On this machine (no qemu needed): the same site with the Mooncake-less stand-in fails only the import."""
    findings = {}
    for image in (WITH_MOONCAKE, WITHOUT_MOONCAKE):
        path = tmp_path / f"{image.split(':')[1]}.yaml"
        path.write_text(site_file(tmp_path, image))
        (tmp_path / "Qwen2.5-72B-Instruct").mkdir(exist_ok=True)
        findings[image] = {f.name: f for f in run_preflight(load_target(path), docker=LocalDocker())}
    good, bad = findings[WITH_MOONCAKE]["mooncake import"], findings[WITHOUT_MOONCAKE]["mooncake import"]
    assert good.status == "ok", good
    assert bad.status == "problem" and "No module named 'mooncake'" in bad.seen, bad
