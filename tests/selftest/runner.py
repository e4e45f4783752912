"""Running the acceptance suite from a self-test: a subprocess `pytest -m acceptance`, its verdicts and
messages from JUnit, its events (the moments it reached, harness/events.py), and what a run could have left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
import yaml

from harness import events as run_events
from harness.config import CONFIGS, ROOT, load_target
from harness.groups import stop_group
from harness.net import port_accepts
from harness.runtime import LABEL
from kit.build import CACHE

TARGET = load_target("cpu-local")
STAGE = "kvpool-acceptance.stage"  # the image recipe's label (targets/cpu-local/image/Dockerfile)
INTERRUPTED = int(pytest.ExitCode.INTERRUPTED)  # pytest's exit code when a KeyboardInterrupt ended the run


class Moment:
    """A moment of a run as its events file records it (docs/reports.md): the event's phase, the exact values of
    some of its fields (at="begin", container=NAME, ...), and for a tool's own output a pattern its `line` must
    match. tests/unit/test_phases.py checks that the code logs every phase a self-test names here."""

    def __init__(self, phase: str, *, line: str | None = None, **fields) -> None:
        self.phase, self.line, self.fields = phase, line, fields

    def matches(self, event: dict) -> bool:
        return (event.get("phase") == self.phase and all(event.get(k) == v for k, v in self.fields.items())
                and (self.line is None or re.search(self.line, event.get("line", "")) is not None))

    def __repr__(self) -> str:
        shown = [repr(self.phase), *(f"{k}={v!r}" for k, v in self.fields.items())]
        return f"Moment({', '.join(shown + ([f'line={self.line!r}'] if self.line else []))})"


def happened(events: list[dict], moment: Moment) -> bool:
    return any(moment.matches(e) for e in events)


def after(events: list[dict], moment: Moment) -> list[dict]:
    """The events after the first that matches `moment` ([] when none does)."""
    i = next((i for i, e in enumerate(events) if moment.matches(e)), len(events))
    return events[i + 1:]


INTERRUPT = Moment("interrupted")
TEARDOWN_BEGINS, TEARDOWN_ENDS = Moment("teardown", at="begin"), Moment("teardown", at="end")


def torn_down(events: list[dict]) -> bool:
    """The interrupt reached the run, then its teardown began and ended (an undo that failed logs no end)."""
    return happened(after(after(events, INTERRUPT), TEARDOWN_BEGINS), TEARDOWN_ENDS)


def phases(events: list[dict]) -> str:
    """The phases of a run's events, for a failure's message."""
    return ", ".join(e["phase"] + (f" {e['at']}" if "at" in e else "") for e in events if "phase" in e) or "none"


@dataclass
class SuiteRun:
    rc: int
    output: str
    seconds: float
    verdicts: dict[str, str]  # test id -> passed | failure | error | skipped
    messages: dict[str, str]  # test id -> its whole failure, error or skip message (a cause may be in a log tail)
    events: list[dict] = field(default_factory=list)  # its events file (harness/events.py), in order

    def failing(self) -> dict[str, str]:
        return {k: self.messages[k] for k, v in self.verdicts.items() if v in ("failure", "error")}


def run_suite(tmp_path: Path, *args: str, timeout: float = 1500, env: dict | None = None,
              mark: str = "acceptance") -> SuiteRun:
    """`pytest -m MARK ARGS` (the acceptance suite, or the resilience stage), with JUnit verdicts and messages and
    its events."""
    junit = tmp_path / f"junit-{time.monotonic_ns()}.xml"
    events = junit.with_name(junit.stem.replace("junit", "events") + ".jsonl")
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-m", mark,
                             "-p", "no:cacheprovider", "-s", f"--junitxml={junit}", f"--events={events}", *args],
                            cwd=ROOT,
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
    return SuiteRun(run.returncode, run.stdout + run.stderr, seconds, verdicts, messages, run_events.read(events))


@dataclass
class Interrupted:
    took: float  # seconds from the signal to the run's exit
    rc: int
    output: str
    events: list[dict]  # its events file, in order


def interrupt_at(moment: Moment, signum: int, *args: str, events: Path, env: dict | None = None, tox: bool = False,
                 timeout: float = 600, wait_s: float = 60) -> Interrupted:
    """Run the suite with its events written to `events` (--events, a new file), send `signum` once the run has
    logged `moment` there, and say how long it took to exit after. Fails at once if the run ends before that moment:
    a run that ended on its own was never interrupted.

    With `tox`, through `tox -e acceptance` as users start it: SIGINT then goes to the whole process group (tox and
    pytest, as a terminal's Ctrl-C does) and SIGTERM to tox alone (`kill`, `timeout`); else to pytest itself."""
    pytest_args = ["-p", "no:cacheprovider", "-s", f"--events={events}", *args]
    argv = ([sys.executable, "-m", "tox", "-e", "acceptance", "--", *pytest_args] if tox else
            [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-m", "acceptance", *pytest_args,
             "tests/acceptance"])
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            exited = proc.poll() is not None  # before the read: an event written just before the exit is seen
            if happened(run_events.read(events), moment):
                break
            assert not exited, (f"the run exited ({proc.returncode}) before {moment} (its phases: "
                                f"{phases(run_events.read(events))}):\n{''.join(lines[-30:])}")
            assert time.monotonic() < deadline, (f"the run never reached {moment} (its phases: "
                                                 f"{phases(run_events.read(events))}):\n{''.join(lines[-30:])}")
            time.sleep(0.1)
        time.sleep(0.5)  # inside the moment, not at its first event
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
    return Interrupted(took, proc.returncode, "".join(lines), run_events.read(events))


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
