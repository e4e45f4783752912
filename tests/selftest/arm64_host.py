"""An emulated Atlas host without NPUs: an arm64 Debian root filesystem (bullseye: Python 3.9, as openEuler 22.03's)
run under qemu-user-static through binfmt_misc, with this machine's Docker socket inside. What an aarch64 host does to
the README's Atlas steps (pip choosing wheels, the preflight reading /dev and /proc) happens in it for real; what it
cannot show is anything an NPU does.

The root filesystem is made once by debootstrap from the host's Debian mirror and kept under .cache/arm64-host (the
stamp names its suite and packages). Commands run in a private mount namespace (unshare), so the binds into it (proc,
dev, the socket, the clone) vanish with the command, however it ends."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from harness.config import ROOT
from harness.progress import logger
from kit.build import KitError, host_debian_mirror, run_streamed, unmount_under

SUITE = "bullseye"
PACKAGES = ["python3", "python3-venv", "ca-certificates", "procps", "iproute2"]
HOME = ROOT / ".cache" / "arm64-host"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
QEMU_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")  # Debian's qemu-user-static: flags F (fix binary)

log = logger("arm64-host")


def ensure_binfmt() -> None:
    """aarch64 ELF files run through qemu: binfmt_misc mounted, Debian's qemu-aarch64 entry registered."""
    if not QEMU_CONF.is_file():
        raise KitError(f"{QEMU_CONF} is missing: scripts/setup installs qemu-user-static")
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True)
    if not (BINFMT / "qemu-aarch64").exists():
        (BINFMT / "register").write_text(QEMU_CONF.read_text().strip())
    if (BINFMT / "status").read_text().strip() != "enabled":
        raise KitError("binfmt_misc is disabled on this machine (/proc/sys/fs/binfmt_misc/status)")


def rootfs() -> Path:
    """The arm64 root filesystem, built when missing or when its suite or packages changed."""
    ensure_binfmt()
    stamp_text = hashlib.sha256(" ".join([SUITE, *PACKAGES]).encode()).hexdigest()
    fs, stamp = HOME / SUITE, HOME / f"{SUITE}.stamp"
    if fs.is_dir() and stamp.is_file() and stamp.read_text().strip() == stamp_text:
        return fs
    shutil.rmtree(fs, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    fs.mkdir(parents=True)
    log.info(f"debootstrap --arch arm64 {SUITE} into {fs.relative_to(ROOT)} (second stage under qemu: minutes)")
    try:
        run_streamed(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                      SUITE, str(fs), host_debian_mirror()], "debootstrap",
                     show=lambda line: re.fullmatch(r"I: [A-Z]\w+ .*(packages|system)\.\.\.", line) is not None)
    except BaseException:
        unmount_under(fs)  # debootstrap's proc and sys, when it was stopped in its second stage
        shutil.rmtree(fs, ignore_errors=True)
        raise
    stamp.write_text(stamp_text + "\n")
    return fs


# Inside: the host's /dev, /proc and /sys (a real kernel, no NPU devices), DNS and /etc/hosts (debootstrap writes
# none, so not even localhost would resolve), the Docker socket, the work folder,
# and the CA bundles this machine's downloads trust (by the same paths, as the variables that name them say).
BINDS = ["/dev", "/proc", "/sys", "/etc/resolv.conf", "/etc/hosts", "/var/run/docker.sock"]
CA_VARS = ("SSL_CERT_FILE", "SSL_CERT_DIR", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


def host_env() -> dict[str, str]:
    """What a user's shell on the Atlas would have: PATH, HOME, and this machine's proxies and CA settings."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    env.update({k: v for k, v in os.environ.items()
                if k in PROXY_VARS or k in CA_VARS or (k.startswith("PIP_") and k != "PIP_FIND_LINKS")})
    return env


def run(fs: Path, work: Path, script: str, timeout: float, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`bash -e script` as root in the emulated host, in `cwd` (default `work`). `work` is a folder of this machine
    bound at the same path, so that Docker (this machine's daemon) finds a volume's host folder where the emulated
    host sees it."""
    env = host_env() if env is None else env
    step = work / ".arm64-step.sh"
    step.write_text(f"set -e\ncd {shlex.quote(str(cwd or work))}\n{script}\n")
    sources = [*BINDS, *(env[k] for k in CA_VARS if k in env)]
    # By their real paths: the root filesystem's own symlinks (var/run -> /run) would lead a bind out of it.
    real = dict.fromkeys(os.path.realpath(s) for s in sources if Path(s).exists())
    binds = [(s, s) for s in real] + [(str(work), str(work))]
    mounts = []
    for src, dst in binds:
        target = fs / dst.lstrip("/")
        if Path(src).is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=True)
        mounts.append(f"mount --rbind {shlex.quote(src)} {shlex.quote(str(target))}")
    assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    inner = " && ".join([*mounts, f"exec chroot {shlex.quote(str(fs))} /usr/bin/env -i {assignments} "
                                  f"/bin/bash {shlex.quote(str(step))}"])
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", inner],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
