"""A command in its own process group, and the one way we stop it: on every way out (its deadline, an exception,
a Ctrl-C, a Jenkins abort that harness.interrupts turned into KeyboardInterrupt) its whole group goes, not only the
command: a debootstrap, a docker build or a load generator has children that would go on without us.

    with in_own_group(argv, term="group", grace_s=10, until_gone=True, stdout=subprocess.PIPE) as p:
        for line in p.stdout: ...

Its own session, so that a signal to our process group (a terminal's Ctrl-C) reaches it once, through us.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from harness.waiting import wait_until


def stop_group(p: subprocess.Popen, *, term: Literal["group", "leader"] | None = None, grace_s: float = 0,
               until_gone: bool = False) -> None:
    """Stop p's process group and reap p; nothing if p has exited already.

    term None: SIGKILL the group at once. term "group": SIGTERM the group first; "leader": SIGTERM p alone, for a
    command that stops its own children on TERM (a `pytest -m acceptance` tearing its deployment down). Then up to
    grace_s for p to exit, or with until_gone for the whole group to be gone, before the SIGKILL. until_gone also
    waits up to grace_s after the SIGKILL: a child can outlive the command by a moment."""
    if p.poll() is not None:
        return  # reaped: its number may name another process's group by now, so what it left is not ours to signal
    try:
        if term is not None:
            if term == "leader":
                p.send_signal(signal.SIGTERM)
            else:
                os.killpg(p.pid, signal.SIGTERM)
            if _gone(p, grace_s, whole_group=until_gone):
                return
        os.killpg(p.pid, signal.SIGKILL)
        if until_gone:
            _gone(p, grace_s, whole_group=True)
    except ProcessLookupError:
        pass  # the group went by itself in the meantime
    p.wait()


@contextmanager
def in_own_group(argv: list[str], *, term: Literal["group", "leader"] | None = None, grace_s: float = 0,
                 until_gone: bool = False, **popen) -> Iterator[subprocess.Popen]:
    """Popen(argv, **popen) in its own session; on every way out of the block, stop_group(p, ...) (above), then
    close the pipes we read from: only then, so that the command hears its SIGTERM before it can die of SIGPIPE
    (debootstrap unmounts on TERM)."""
    p = subprocess.Popen(argv, start_new_session=True, **popen)
    try:
        yield p
    finally:
        stop_group(p, term=term, grace_s=grace_s, until_gone=until_gone)
        for pipe in (p.stdout, p.stderr):
            if pipe is not None:
                pipe.close()


def _gone(p: subprocess.Popen, timeout_s: float, *, whole_group: bool) -> bool:
    """Wait up to timeout_s for p to exit, or for every member of its group to be gone."""
    if not whole_group:
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def group_gone() -> bool:
        p.poll()  # reap p: a zombie still counts as a member; its orphaned children are reaped by init
        try:
            os.killpg(p.pid, 0)
        except ProcessLookupError:
            return True
        return False

    return bool(wait_until(group_gone, timeout_s=timeout_s, interval_s=0.1))
