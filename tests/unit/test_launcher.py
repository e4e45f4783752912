"""The process launcher run here on the host: argv and env stay data, `$NAME` expands after setup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from harness.runtime import EXPAND, LAUNCHER
from harness.waiting import wait_until


def launch(tmp_path, argv, env=None, setup=()):
    log, pidfile = tmp_path / "p.log", tmp_path / "p.pid"
    run_env = {"PATH": os.environ["PATH"], "KVPOOL_ENV": json.dumps(env or {}), "KVPOOL_EXPAND": EXPAND,
               "BASE": "from-base"}
    subprocess.run(["bash", "-c", LAUNCHER, "launcher", str(log), str(pidfile), str(len(setup)), *setup, *argv],
                   env=run_env, cwd=tmp_path, timeout=30, check=False)
    return log.read_text(), int(pidfile.read_text())


def test_env_expands_after_setup_and_argv_is_data(tmp_path):
    setup = tmp_path / "set_env.sh"
    setup.write_text("export FROM_SETUP=/opt/ascend\n")
    marker = tmp_path / "pwned"
    hostile = f"; touch {marker}; $(touch {marker}) `touch {marker}` \"' \n"
    out, _ = launch(tmp_path, ["python3", "-c", "import os, sys; print(os.environ['LIB']); print(os.environ['RAW']);"
                                                "print(sys.argv[1])", hostile],
                    env={"LIB": "/x:${FROM_SETUP}:$BASE", "RAW": hostile}, setup=[str(setup)])
    lines = out.splitlines()
    assert lines[0] == "/x:/opt/ascend:from-base"
    assert "touch" in lines[1] and "touch" in out.split("\n", 2)[2]
    assert not marker.exists(), "a shell metacharacter in env or argv was executed"


def test_pid_file_names_the_process_itself(tmp_path):
    out, pid = launch(tmp_path, ["python3", "-c", "import os; print(os.getpid(), os.getpgrp())"])
    got_pid, got_pgrp = map(int, out.split())
    assert got_pid == pid, "the pid file must name the final process (exec chain), so stop() reaches it"
    assert got_pgrp == pid, "the process leads its own group, so stop() reaches its children too"


def test_failing_setup_script_is_reported(tmp_path):
    out, _ = launch(tmp_path, ["true"], setup=[str(tmp_path / "missing.sh")])
    assert "sourcing" in out and "missing.sh" in out


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts: it runs no more code)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def stopped(tmp_path, kill, timeout_s: float) -> tuple[int, bool]:
    """A parent that spawns a sleeping child, killed by `kill(pid in the pid file)`; the child's pid and whether it
    was gone within timeout_s."""
    log, pidfile = tmp_path / "p.log", tmp_path / "p.pid"
    p = subprocess.Popen(["bash", "-c", LAUNCHER, "launcher", str(log), str(pidfile), "0",
                          "bash", "-c", "sleep 300 & echo child $!; wait"],
                         env={"PATH": os.environ["PATH"], "KVPOOL_ENV": "{}", "KVPOOL_EXPAND": EXPAND})
    said = wait_until(lambda: log.exists() and "child" in log.read_text() and log.read_text(), timeout_s=10,
                      interval_s=0.05)
    assert said, "the parent never named its child"
    child = int(said.split()[1])
    kill(int(pidfile.read_text()))
    p.wait(timeout=10)
    return child, bool(wait_until(lambda: gone(child), timeout_s=timeout_s, interval_s=0.05))


def test_stop_reaches_children(tmp_path):
    _, child_gone = stopped(tmp_path, lambda pid: os.killpg(pid, signal.SIGTERM), 10)  # as Process.stop() does
    assert child_gone, "the child outlived its process group's SIGTERM by 10 s"


def test_negative_control_a_signal_to_the_parent_alone_leaves_the_child(tmp_path):
    child, child_gone = stopped(tmp_path, lambda pid: os.kill(pid, signal.SIGTERM), 2)  # the group's took ms
    try:
        assert not child_gone
    finally:
        os.kill(child, signal.SIGKILL)
