"""A Jenkins abort or `kill` sends SIGTERM, which by default ends Python without running a single `finally`:
turn it into KeyboardInterrupt, so it unwinds like Ctrl-C and every teardown runs. And a run started where SIGINT is
ignored (a background job of a non-interactive shell) gets no KeyboardInterrupt from Python at all: a Ctrl-C or
`kill -INT` would then leave it running and its deployment up, so SIGINT is made to interrupt again."""

from __future__ import annotations

import os
import signal
import subprocess


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def unwind_on_sigterm() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_to_teardown(argv: list[str], *, grace_s: float = 180, **popen) -> int:
    """Run a command that tears its own deployment down on SIGTERM (a `pytest -m acceptance`) and return its exit
    code. Interrupted, we pass it one SIGTERM and wait up to grace_s for its teardown before we go on unwinding:
    subprocess.run would SIGKILL it 0.25 s after a Ctrl-C and leave its container running. Its own session, so that a
    signal to our process group (Jenkins, a terminal) reaches it once, through us, and not twice."""
    p = subprocess.Popen(argv, start_new_session=True, **popen)
    try:
        return p.wait()
    except BaseException:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        raise
