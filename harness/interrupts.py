"""A Jenkins abort or `kill` sends SIGTERM, which by default ends Python without running a single `finally`:
turn it into KeyboardInterrupt, so it unwinds like Ctrl-C and every teardown runs. And a run started where SIGINT is
ignored (a background job of a non-interactive shell) gets no KeyboardInterrupt from Python at all: a Ctrl-C or
`kill -INT` would then leave it running and its deployment up, so SIGINT is made to interrupt again.

The first signal unwinds; the teardown it starts then runs to its end. Repeats are normal: a terminal's Ctrl-C
reaches tox and pytest together and tox passes it on again (tox.ini), a Jenkins abort signals every process of the
build. A second KeyboardInterrupt inside a fixture's finalizer would cut that finalizer short and leave its
container or process behind, so later SIGINTs and SIGTERMs are only reported; SIGKILL still ends the run."""

from __future__ import annotations

import signal
import sys

from harness.groups import in_own_group

REPEAT = "[kvpool] signal {} ignored: the teardown the first signal started runs to its end (SIGKILL abandons it)"


def _repeat(signum, frame):
    print(REPEAT.format(signal.Signals(signum).name), file=sys.stderr, flush=True)


def _interrupt(signum, frame):
    signal.signal(signal.SIGINT, _repeat)
    signal.signal(signal.SIGTERM, _repeat)
    raise KeyboardInterrupt(f"signal {signum}")


def unwind_on_sigterm() -> None:
    """SIGTERM and SIGINT unwind the run like Ctrl-C, once (see above)."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def run_to_teardown(argv: list[str], *, grace_s: float = 180, **popen) -> int:
    """Run a command that tears its own deployment down on SIGTERM (a `pytest -m acceptance`) and return its exit
    code. Interrupted, we pass it one SIGTERM and wait up to grace_s for its teardown before we go on unwinding:
    subprocess.run would SIGKILL it 0.25 s after a Ctrl-C and leave its container running. Its own session, so that a
    signal to our process group (Jenkins, a terminal) reaches it once, through us, and not twice."""
    with in_own_group(argv, term="leader", grace_s=grace_s, **popen) as p:
        return p.wait()
