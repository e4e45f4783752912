"""Running the acceptance suite from a self-test: a subprocess `pytest -m acceptance`, its verdicts and
messages from JUnit, and what a run could have left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import yaml

from harness.config import CONFIGS, ROOT, load_target
from harness.groups import stop_group
from harness.net import port_accepts
from harness.runtime import LABEL
from kit.build import CACHE

TARGET = load_target("cpu-local")
STAGE = "kvpool-acceptance.stage"  # the image recipe's label (targets/cpu-local/image/Dockerfile)
INTERRUPTED = int(pytest.ExitCode.INTERRUPTED)  # pytest's exit code when a KeyboardInterrupt ended the run


@dataclass
class SuiteRun:
    rc: int
    output: str
    seconds: float
    verdicts: dict[str, str]  # test id -> passed | failure | error | skipped
    messages: dict[str, str]  # test id -> its whole failure, error or skip message (a cause may be in a log tail)

    def failing(self) -> dict[str, str]:
        return {k: self.messages[k] for k, v in self.verdicts.items() if v in ("failure", "error")}


def run_suite(tmp_path: Path, *args: str, timeout: float = 1500, env: dict | None = None,
              mark: str = "acceptance") -> SuiteRun:
    """`pytest -m MARK ARGS` (the acceptance suite, or the resilience stage), with JUnit verdicts and messages."""
    junit = tmp_path / f"junit-{time.monotonic_ns()}.xml"
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-m", mark,
                             "-p", "no:cacheprovider", "-s", f"--junitxml={junit}", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:
        # Ctrl-C or a timeout here: let the suite under test tear its deployment down (SIGINT), as a user's
        # Ctrl-C would; subprocess.run would SIGKILL it and leave its container and processes behind.
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    run = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    seconds = time.monotonic() - start
    verdicts, messages = {}, {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            key = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
            outcome = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
            verdicts[key] = outcome.tag if outcome is not None else "passed"
            # Its message, then its long form (the traceback or the log tail the message ends with).
            text = "\n".join(filter(None, [outcome.get("message"), outcome.text])) if outcome is not None else ""
            messages[key] = text.strip()
    return SuiteRun(run.returncode, run.stdout + run.stderr, seconds, verdicts, messages)


@dataclass
class Interrupted:
    took: float  # seconds from the signal to the run's exit
    rc: int
    output: str


def interrupt_at(pattern: str, signum: int, *args: str, env: dict | None = None, tox: bool = False,
                 timeout: float = 600, wait_s: float = 60) -> Interrupted:
    """Run the suite, send `signum` when a line matches `pattern`, and say how long it took to exit after. Fails at
    once if the run ends before that line: a run that ended on its own was never interrupted.

    With `tox`, through `tox -e acceptance` as users start it: SIGINT then goes to the whole process group (tox and
    pytest, as a terminal's Ctrl-C does) and SIGTERM to tox alone (`kill`, `timeout`); else to pytest itself."""
    pytest_args = ["-p", "no:cacheprovider", "-s", *args]
    argv = ([sys.executable, "-m", "tox", "-e", "acceptance", "--", *pytest_args] if tox else
            [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-m", "acceptance", *pytest_args,
             "tests/acceptance"])
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if re.search(pattern, line):
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while not seen.wait(1):
            assert proc.poll() is None, (f"the run exited ({proc.returncode}) before it printed {pattern!r}:\n"
                                         f"{''.join(lines[-30:])}")
            assert time.monotonic() < deadline, f"the run never printed {pattern!r}:\n{''.join(lines[-30:])}"
        time.sleep(0.5)  # inside the moment, not at its first line
        assert proc.poll() is None, f"the run exited ({proc.returncode}) before the signal:\n{''.join(lines[-30:])}"
        if tox and signum == signal.SIGINT:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        sent = time.monotonic()
        proc.wait(timeout=wait_s)
        took = time.monotonic() - sent
    finally:
        stop_group(proc)  # SIGKILL its whole group at once; its pipe stays open until the reader has read it all
        reader.join(timeout=5)
    return Interrupted(took, proc.returncode, "".join(lines))


def faulty_target(tmp_path: Path, change, base: str = "cpu-local") -> Path:
    """A target (cpu-local unless `base` names another) with one fault: `change(data)` edits the parsed YAML; returns
    the written file."""
    data = yaml.safe_load((CONFIGS / f"{base}.yaml").read_text())
    change(data)
    path = tmp_path / "faulty.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def leftovers() -> list[str]:
    """Whatever a run of the suite could have left: its containers, processes, listening ports, and what an
    interrupted kit build could leave (build containers and layers, temp folders, pip's included, debootstrap's
    mounts)."""
    client = docker.from_env()
    found = [f"container {c.name}" for c in client.containers.list(all=True, filters={"label": LABEL})]
    found += [f"network {n.name}" for n in client.networks.list(filters={"label": LABEL})]
    # A build's step containers and layers carry the recipe's stage label, not the suite's. Unlike any
    # container made from the built image (which has the label too), a step container names its image by ID.
    found += [f"build container {c.short_id}" for c in client.containers.list(all=True, filters={"label": STAGE})
              if c.attrs["Config"]["Image"].startswith("sha256:")]
    found += [f"build layer {i.short_id}" for i in client.images.list(filters={"dangling": True, "label": STAGE})]
    ps = subprocess.run(["pgrep", "-fa", "vllm serve|mooncake_master|debootstrap|pip download|docker (build|import)"],
                        capture_output=True, text=True).stdout
    found += [f"process {line}" for line in ps.splitlines()]
    found += [f"temp folder {p.relative_to(ROOT)}" for p in (CACHE / "rootfs", CACHE / "context", CACHE / "tmp")
              if p.exists()]
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    found += [f"mount {m}" for m in mounts if m.startswith(str(CACHE))]
    ports = [TARGET.mooncake.master.port, TARGET.mooncake.master.metrics_port, *(x.port for x in TARGET.instances)]
    found += [f"port {p}" for p in ports if port_accepts("127.0.0.1", p, timeout=0.3)]
    return found


def run_dirs() -> set[str]:
    return {p.name for p in (ROOT / "reports").glob(f"{TARGET.name}-*") if p.is_dir()}
