"""harness.groups on real process trees: a shell (the group's leader) with a background child, stopped on each way
out of its block. "Gone" is asked of the kernel: os.killpg(pgid, 0) raises ProcessLookupError once no member is left."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.groups import in_own_group, stop_group
from harness.waiting import wait_until


def tree(tmp_path: Path, *, ignore_term: bool = False, leader_on_term: str = "") -> list[str]:
    """A shell that starts a background `sleep` (its pid in tmp_path/child), says "ready" and waits. ignore_term:
    both ignore SIGTERM (an ignored signal is inherited); leader_on_term: the shell's own trap for TERM (its child
    keeps the default)."""
    trap = "trap '' TERM; " if ignore_term else ""
    own = f"trap '{leader_on_term}' TERM; " if leader_on_term else ""
    return ["sh", "-c", f"{trap}sleep 30 & echo $! > {tmp_path / 'child'}; {own}echo ready > {tmp_path / 'ready'}; "
            "wait"]


def ready(tmp_path: Path, p: subprocess.Popen) -> None:
    assert wait_until(lambda: (tmp_path / "ready").exists(), timeout_s=10, interval_s=0.02), "the tree never started"
    assert p.poll() is None


def members(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def child_dies(tmp_path: Path, within_s: float = 1) -> bool:
    """Whether the tree's child dies within within_s. A zombie counts: killpg still finds it until it is reaped."""
    stat = Path(f"/proc/{int((tmp_path / 'child').read_text())}/stat")

    def dead() -> bool:
        try:
            return stat.read_text().split(") ")[1][0] in "ZX"
        except FileNotFoundError:
            return True

    return bool(wait_until(dead, timeout_s=within_s, interval_s=0.05))


def gone_soon(pgid: int) -> bool:
    """No member left within 5 s: a SIGKILLed orphan is a zombie until init reaps it."""
    return bool(wait_until(lambda: not members(pgid), timeout_s=5, interval_s=0.05))


@pytest.fixture
def started(tmp_path):
    """Popen a tree in its own session; whatever a failing test left of its group is SIGKILLed afterwards."""
    procs: list[subprocess.Popen] = []

    def start(**kw) -> subprocess.Popen:
        p = subprocess.Popen(tree(tmp_path, **kw), start_new_session=True)
        procs.append(p)
        ready(tmp_path, p)
        return p

    yield start
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(started):
    p = started(ignore_term=True)
    t = time.monotonic()
    stop_group(p, term="group", grace_s=4, until_gone=True)
    assert time.monotonic() - t >= 4  # it waited the grace: SIGTERM came first and was ignored
    assert p.returncode == -signal.SIGKILL
    assert not members(p.pid), "until_gone returned while the group still had members"


def test_a_tree_that_exits_on_sigterm_goes_within_the_grace(started):
    p = started()
    t = time.monotonic()
    stop_group(p, term="group", grace_s=10, until_gone=True)
    assert time.monotonic() - t < 5 and p.returncode == -signal.SIGTERM
    assert not members(p.pid)


def test_negative_control_killing_the_leader_alone_leaves_its_child(started, tmp_path):
    p = started()
    p.kill()
    p.wait()
    assert not child_dies(tmp_path) and members(p.pid), "the checks above would pass whatever stop_group did"


def test_sigterm_to_the_leader_alone_leaves_its_children_to_it(started, tmp_path):
    # As run_to_teardown: the suite tears its own deployment down; we must not kill it under the suite.
    p = started(leader_on_term="exit 0")
    stop_group(p, term="leader", grace_s=10)
    assert p.returncode == 0  # its own trap ended it, no SIGKILL
    assert not child_dies(tmp_path), "the child was signalled too: only the leader should have had the SIGTERM"


def test_a_leader_that_ignores_sigterm_gets_its_group_killed(started):
    p = started(ignore_term=True)
    stop_group(p, term="leader", grace_s=0.5)
    assert p.returncode == -signal.SIGKILL
    assert gone_soon(p.pid)


def test_past_a_deadline_the_whole_group_is_killed_at_once(tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        with in_own_group(tree(tmp_path, ignore_term=True)) as p:
            ready(tmp_path, p)
            p.wait(timeout=0.3)
    assert p.returncode == -signal.SIGKILL
    assert gone_soon(p.pid)


@pytest.mark.parametrize("error", [RuntimeError("a step failed"), KeyboardInterrupt()])
def test_an_exception_in_the_block_stops_the_group_and_goes_on(tmp_path, error):
    with pytest.raises(type(error)) as raised:
        with in_own_group(tree(tmp_path), term="group", grace_s=10, until_gone=True) as p:
            ready(tmp_path, p)
            raise error
    assert raised.value is error
    assert p.returncode == -signal.SIGTERM and not members(p.pid)


def test_once_the_command_is_reaped_what_it_left_is_not_signalled(tmp_path):
    # Its process number may be reused by then; the four callers never signalled a reaped command's group either.
    with in_own_group(["sh", "-c", f"sleep 30 & echo $! > {tmp_path / 'child'}; exit 3"]) as p:
        p.wait()
    try:
        assert p.returncode == 3
        assert not child_dies(tmp_path), "the child left behind was killed"
    finally:
        os.killpg(p.pid, signal.SIGKILL)


def test_its_pipe_closes_only_after_the_command_heard_its_sigterm(tmp_path):
    # As debootstrap: on TERM it writes, then cleans up. Were its pipe closed first, the write would kill it
    # (SIGPIPE) before the cleanup.
    done = tmp_path / "cleaned up"
    script = f"trap 'echo unmounting; echo yes > \"{done}\"; exit 1' TERM; echo ready > {tmp_path / 'ready'}; " \
             "sleep 30 & wait"
    with pytest.raises(KeyboardInterrupt):
        with in_own_group(["sh", "-c", script], term="group", grace_s=10, until_gone=True,
                          stdout=subprocess.PIPE, text=True) as p:
            ready(tmp_path, p)
            raise KeyboardInterrupt
    assert done.exists() and p.returncode == 1
    assert p.stdout.closed  # type: ignore[union-attr]
