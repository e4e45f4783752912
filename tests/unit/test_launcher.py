"""The process launcher run here on the host: argv and env stay data, `$NAME` expands after setup."""

from __future__ import annotations

import json
import os
import subprocess
import time

from harness.runtime import EXPAND, LAUNCHER


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


def test_stop_reaches_children(tmp_path):
    # A parent that spawns a sleeping child, killed through its process group as Process.stop() does.
    log, pidfile = tmp_path / "p.log", tmp_path / "p.pid"
    p = subprocess.Popen(["bash", "-c", LAUNCHER, "launcher", str(log), str(pidfile), "0",
                          "bash", "-c", "sleep 300 & echo child $!; wait"],
                         env={"PATH": os.environ["PATH"], "KVPOOL_ENV": "{}", "KVPOOL_EXPAND": EXPAND})
    deadline = time.monotonic() + 10
    while "child" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(log.read_text().split()[1])
    os.killpg(int(pidfile.read_text()), 15)
    p.wait(timeout=10)
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z"
