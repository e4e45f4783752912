"""Ctrl-C or SIGTERM to tox, the documented entry point, must let the suite's teardown finish. A stand-in for
`pytest -m acceptance` (it unwinds as the suite does and needs 3 s to tear down) runs under a throwaway tox project
with this repository's toxfile.py and tox.ini timeouts; the negative controls run it with tox's defaults."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.config import ROOT

CHILD = """
import os, sys, time
from harness.interrupts import unwind_on_sigterm
unwind_on_sigterm()
log = open(sys.argv[1], "a", buffering=1)
log.write(f"started {os.getpid()}\\n")
try:
    time.sleep(60)
except KeyboardInterrupt:
    time.sleep(3)  # the deployment's teardown
    log.write("torn down\\n")
"""
TIMEOUTS = ("suicide_timeout", "interrupt_timeout", "terminate_timeout")
TOX_DEFAULTS = {"suicide_timeout": "0.0", "interrupt_timeout": "0.3", "terminate_timeout": "0.2"}


def ours() -> dict[str, str]:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    return {k: ini["testenv"][k] for k in TIMEOUTS}


def project(tmp_path: Path, timeouts: dict[str, str], toxfile: bool) -> Path:
    """A tox project whose one env runs the stand-in; the child's log is tmp_path/child.log."""
    (tmp_path / "child.py").write_text(CHILD)
    lines = ["[tox]", "env_list = suite", "[testenv:suite]", "skip_install = true", "passenv = PYTHONPATH",
             *(f"{k} = {v}" for k, v in timeouts.items()),
             f"commands = python {tmp_path / 'child.py'} {tmp_path / 'child.log'}"]
    (tmp_path / "tox.ini").write_text("\n".join(lines) + "\n")
    if toxfile:
        shutil.copy(ROOT / "toxfile.py", tmp_path / "toxfile.py")
    return tmp_path / "child.log"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def interrupt_tox(tmp_path: Path, how: str, timeouts: dict[str, str], toxfile: bool = True,
                  sigint: signal.Handlers = signal.SIG_DFL) -> tuple[list[str], bool]:
    """Run tox, signal it once the child runs (Ctrl-C: SIGINT to the whole foreground group, as a terminal does;
    SIGTERM: to tox alone, as `kill` or `timeout` do), and return the child's log and whether it outlived tox. tox
    starts with the SIGINT disposition `sigint` (SIG_IGN: a background job of a non-interactive shell), not ours."""
    log = project(tmp_path, timeouts, toxfile)
    tox = subprocess.Popen([sys.executable, "-m", "tox", "-c", str(tmp_path), "-e", "suite", "-q"], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120  # tox makes its env first
    while not (log.exists() and log.read_text().startswith("started")):
        assert time.monotonic() < deadline and tox.poll() is None, "the stand-in never started under tox"
        time.sleep(0.1)
    child = int(log.read_text().split()[1])
    if how == "Ctrl-C":
        os.killpg(tox.pid, signal.SIGINT)
    else:
        tox.send_signal(signal.SIGTERM)
    try:
        tox.wait(timeout=120)
    finally:
        if tox.poll() is None:
            os.killpg(tox.pid, signal.SIGKILL)
    orphan = alive(child)
    if orphan:
        os.kill(child, signal.SIGKILL)
    return log.read_text().splitlines()[1:], orphan


@pytest.mark.parametrize("how", ["Ctrl-C", "SIGTERM"])
def test_tox_waits_for_the_teardown(tmp_path, how):
    assert interrupt_tox(tmp_path, how, ours()) == (["torn down"], False)


@pytest.mark.parametrize("sigint", [signal.SIG_DFL, signal.SIG_IGN], ids=["terminal", "background job"])
def test_negative_control_toxs_default_timeouts_kill_the_teardown(tmp_path, sigint):
    # Started ignoring SIGINT, tox still acts on the Ctrl-C (toxfile.py); else it would pass nothing on and the
    # stand-in, interrupted by the same Ctrl-C, would tear down in peace.
    lines, _ = interrupt_tox(tmp_path, "Ctrl-C", TOX_DEFAULTS, sigint=sigint)
    assert "torn down" not in lines  # SIGKILLed 0.5 s after the Ctrl-C


def test_negative_control_without_toxfile_sigterm_orphans_the_suite(tmp_path):
    lines, orphan = interrupt_tox(tmp_path, "SIGTERM", ours(), toxfile=False)
    assert orphan and lines == []  # tox died at once; its child ran on alone
