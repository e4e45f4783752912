"""The one way the suite waits for something: call a check until it says yes, or until a timeout.

    pid = wait_until(read_pid, timeout_s=15, interval_s=0.1)
    if pid is None:
        raise DeploymentError("... did not start")

A check returns a truthy value when the wait is over (that value is returned), anything falsy to go on
waiting, and raises to stop the wait at once: that is how a caller fails fast, e.g. on a process that died,
with its own message. Waiting never raises by itself: a timeout is a None the caller words.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], *, timeout_s: float, interval_s: float,
               progress: Callable[[float], None] | None = None, progress_every_s: float = 30,
               since: float | None = None) -> T | None:
    """Call `check` every `interval_s` until it returns a truthy value, and return that value; return None once
    `timeout_s` have passed (math.inf: no timeout; the check raises when waiting is over) after a check said no.

    `since` (a time.monotonic() value; default now) is when the wait began, for the timeout and for progress:
    a wait on something launched earlier counts from its launch. `progress(elapsed_s)` is called after a check
    said no, at most every `progress_every_s`, the first time `progress_every_s` after `since`.
    An exception raised by `check` or `progress` propagates at once.
    """
    start = time.monotonic() if since is None else since
    last_progress = start
    while True:
        value = check()
        if value:
            return value
        now = time.monotonic()
        if now - start >= timeout_s:
            return None
        if progress is not None and now - last_progress >= progress_every_s:
            last_progress = now
            progress(now - start)
        time.sleep(interval_s)
