"""A Jenkins abort or `kill` sends SIGTERM, which by default ends Python without running a single `finally`:
turn it into KeyboardInterrupt, so it unwinds like Ctrl-C and every teardown runs."""

from __future__ import annotations

import signal


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def unwind_on_sigterm() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
