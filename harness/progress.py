"""Progress lines: each area of the suite logs to its named logger, `kvpool.<area>` (deployment, kit, repeat, ...),
and one console handler, set up here once, prints every record as `[area] message` on the standard output, flushed
at once: the lines the suite printed before it had loggers, in the same place.

The handler writes to `sys.stdout` as it is when the record comes, as print() did: under pytest's capture the
lines are captured (shown with a failure, live with -s or -p no:capture), and a self-test that reads a run's output
sees each line as it happens. pytest's own log capture takes only WARNING and above (log_level in pyproject.toml), so a
failed test's report shows its progress once, as captured stdout. The `kvpool` logger does not propagate: a root
handler that a library sets up (logging.basicConfig) does not print the lines a second time.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ROOT_LOGGER = "kvpool"


class _Stdout(logging.StreamHandler):
    """A StreamHandler on whatever sys.stdout is at each record (pytest swaps it while it captures)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property above decides
        pass


class _Area(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return line(record.name.removeprefix(ROOT_LOGGER + "."), record.getMessage())


def line(area: str, message: str) -> str:
    """The console line of a record of `kvpool.<area>`."""
    return f"[{area}] {message}"


def line_pattern(area: str, message: str) -> str:
    """A regular expression for the console line of `area` whose message matches the regular expression `message`
    (what a self-test waits for in a run's output)."""
    return re.escape(line(area, "")) + message


def logger(area: str) -> logging.Logger:
    """The logger of an area; its info() records are the progress lines."""
    return logging.getLogger(f"{ROOT_LOGGER}.{area}")


class _Writer(logging.Handler):
    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__()
        self.write = write
        self.setFormatter(_Area())

    def emit(self, record: logging.LogRecord) -> None:
        self.write(self.format(record))


@contextmanager
def shown_live(area: str, write: Callable[[str], None]) -> Iterator[None]:
    """While inside, the lines of `area` go to `write` instead of the standard output: the endurance stage passes
    pytest's terminal reporter, which shows them under capture too, so an hour's run is never silent. The records
    still reach every other handler of `kvpool` (the run's events file)."""
    area_logger, console = logger(area), _console()
    writer = _Writer(write)

    def elsewhere(record: logging.LogRecord) -> bool:
        return record.name != area_logger.name

    area_logger.addHandler(writer)
    console.addFilter(elsewhere)
    try:
        yield
    finally:
        console.removeFilter(elsewhere)
        area_logger.removeHandler(writer)


def _console() -> logging.Handler:
    root = logging.getLogger(ROOT_LOGGER)
    handler = next((h for h in root.handlers if isinstance(h, _Stdout)), None)
    if handler is None:
        handler = _Stdout()
        handler.setFormatter(_Area())
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    return handler


_console()  # here, once: every module that logs progress imports this one first
