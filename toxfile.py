"""tox's inline plugin: a SIGTERM to tox (a Jenkins abort, `kill`, `timeout`, systemd) stops the env's command the way
a Ctrl-C does, instead of killing tox at once and leaving pytest running on, orphaned, with its deployment up.

tox handles KeyboardInterrupt by passing SIGINT to the running command and waiting `interrupt_timeout` before its
SIGTERM (tox.ini gives the suite's teardown that time). By default SIGTERM ends tox without any of that. The first
SIGTERM becomes that KeyboardInterrupt; a repeat is only reported, since a second one would break tox out of its
wait for the teardown. And tox started where SIGINT is ignored (a background job of a non-interactive shell, nohup)
would ignore a Ctrl-C or `kill -INT` and pass nothing on: SIGINT is made to interrupt it again, as the suite does
(harness/interrupts.py)."""

from __future__ import annotations

import signal
import sys


def _repeat(signum, frame):
    print("[tox] SIGTERM again: still waiting for the suite's teardown (SIGKILL abandons it)", file=sys.stderr,
          flush=True)


def _interrupt(signum, frame):
    signal.signal(signal.SIGTERM, _repeat)
    raise KeyboardInterrupt("SIGTERM")


signal.signal(signal.SIGTERM, _interrupt)
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
