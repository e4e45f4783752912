"""A wrapper interrupted while it runs the acceptance suite (tox -e repeat under a Jenkins abort) must let the suite
tear its deployment down: here a child whose teardown takes 1 s stands in for `pytest -m acceptance`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.config import ROOT
from harness.waiting import wait_until

CHILD = """
import os, signal, sys, time
from harness.interrupts import unwind_on_sigterm
log = open(sys.argv[1], "a", buffering=1)
unwind_on_sigterm()
with open(sys.argv[1] + ".pid", "w") as f:
    f.write(str(os.getpid()))
log.write("started\\n")
try:
    time.sleep(60)
except KeyboardInterrupt as e:
    log.write(f"interrupted {e}\\n")
    signal.signal(signal.SIGTERM, lambda *_: log.write("second signal in teardown\\n"))
    time.sleep(1)  # the deployment's teardown
    log.write("torn down\\n")
"""

WRAPPER = """
import subprocess, sys
from harness.interrupts import run_to_teardown, unwind_on_sigterm
unwind_on_sigterm()
child = [sys.executable, "-c", sys.argv[1], sys.argv[2]]
if sys.argv[3] == "run_to_teardown":
    run_to_teardown(child)
else:
    subprocess.run(child)
"""


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts: it runs no more code)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_started(log: Path, proc: subprocess.Popen) -> None:
    """Until the child logged "started" (it runs, its handlers are set); fails if it exits first or takes 30 s."""
    deadline = time.monotonic() + 30
    while not (log.exists() and "started" in log.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, "the child never started"
        time.sleep(0.05)


def interrupted_wrapper(tmp_path: Path, how: str) -> list[str]:
    """Start the wrapper, SIGTERM its whole process group once the child runs, return the child's log lines."""
    log = tmp_path / "child.log"
    wrapper = subprocess.Popen([sys.executable, "-c", WRAPPER, CHILD, str(log), how], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    wait_started(log, wrapper)
    os.killpg(wrapper.pid, signal.SIGTERM)  # as Jenkins or a terminal does: the group, not one process
    wrapper.wait(timeout=30)
    child = int(Path(f"{log}.pid").read_text())
    assert wait_until(lambda: gone(child), timeout_s=30, interval_s=0.05), "the child outlived its wrapper by 30 s"
    return log.read_text().splitlines()  # the child's last word: it has exited or been killed


def test_an_interrupted_wrapper_waits_for_the_suites_teardown(tmp_path):
    lines = interrupted_wrapper(tmp_path, "run_to_teardown")
    assert lines == ["started", f"interrupted signal {int(signal.SIGTERM)}", "torn down"]  # one signal, whole teardown


def test_negative_control_subprocess_run_cuts_the_teardown(tmp_path):
    lines = interrupted_wrapper(tmp_path, "subprocess.run")  # what commands/repeat.py did: its container stayed up
    assert "torn down" not in lines


IGNORING = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `cmd &` in a non-interactive shell starts a background job
os.execv(sys.executable, [sys.executable, "-c", sys.argv[1], *sys.argv[2:]])
"""

SUITE = """
import sys, time
from harness.interrupts import unwind_on_sigterm
log = open(sys.argv[1], "a", buffering=1)
if sys.argv[2] == "unwind":
    unwind_on_sigterm()
log.write("started\\n")
try:
    time.sleep(float(sys.argv[3]))
    log.write("ran to its end\\n")
except KeyboardInterrupt:
    log.write("interrupted\\n")
"""


def started_with_sigint_ignored(tmp_path: Path, how: str) -> list[str]:
    """A stand-in suite started with SIGINT ignored, SIGINTed once it runs; its log lines."""
    log = tmp_path / f"{how}.log"
    proc = subprocess.Popen([sys.executable, "-c", IGNORING, SUITE, str(log), how, "3"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_started(log, proc)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    return log.read_text().splitlines()


def test_sigint_interrupts_a_run_started_with_sigint_ignored(tmp_path):
    assert started_with_sigint_ignored(tmp_path, "unwind") == ["started", "interrupted"]


def test_negative_control_without_it_sigint_is_ignored(tmp_path):
    assert started_with_sigint_ignored(tmp_path, "plain") == ["started", "ran to its end"]


TEARDOWN = """
import signal, sys, time
from harness.interrupts import unwind_on_sigterm
log = open(sys.argv[1], "a", buffering=1)
if sys.argv[2] == "unwind":
    unwind_on_sigterm()
else:  # Python's own defaults, whatever this test was started with (a background job ignores SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
log.write("started\\n")
try:
    time.sleep(60)
except KeyboardInterrupt:
    log.write("interrupted\\n")
    try:
        time.sleep(2)  # the deployment's teardown, during which the repeats arrive
        log.write("torn down\\n")
    except KeyboardInterrupt:
        log.write("teardown cut short\\n")
"""


def signalled_three_times(tmp_path: Path, how: str) -> tuple[list[str], str]:
    """A Ctrl-C, then the same SIGINT again from tox and a SIGTERM from Jenkins while the teardown runs."""
    log = tmp_path / f"{how}.log"
    proc = subprocess.Popen([sys.executable, "-c", TEARDOWN, str(log), how], cwd=ROOT, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_started(log, proc)
    proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 30
    while "interrupted" not in log.read_text():
        assert time.monotonic() < deadline and proc.poll() is None, "the first signal did not interrupt"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    return log.read_text().splitlines(), stderr


def test_repeated_signals_do_not_cut_the_teardown_short(tmp_path):
    lines, stderr = signalled_three_times(tmp_path, "unwind")
    assert lines == ["started", "interrupted", "torn down"]
    assert "signal SIGINT ignored: the teardown the first signal started runs to its end" in stderr
    assert "signal SIGTERM ignored" in stderr


def test_negative_control_python_defaults_cut_the_teardown_short(tmp_path):
    lines, _ = signalled_three_times(tmp_path, "plain")  # the second SIGINT raises in it, SIGTERM kills outright
    assert lines[:2] == ["started", "interrupted"] and "torn down" not in lines
