"""The run's phases as machine-readable events: every record of a `kvpool.*` logger at INFO or above (the progress
lines, harness/progress.py) as one JSON line of reports/<run>/events.jsonl, written and flushed as it comes, so a run
that is killed keeps every event up to its end.

    {"time": "2026-12-03T21:40:02.113+00:00", "area": "deployment", "message": "container: starting",
     "phase": "container", "at": "begin"}

`phase` is the stable name of a moment (docs/reports.md lists them); a record carries it, and the moment's own
fields (`at`, `container`, `process`, ...), through `extra=`. The message is the console line's text, for people: a
program keys on `phase` and the fields, which do not change when a message is reworded. The session writes the file
(fixtures/events.py).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

from harness.progress import ROOT_LOGGER

NAME = "events.jsonl"
# What every LogRecord has, and what formatting adds to it: anything else on a record came through `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def event(record: logging.LogRecord) -> dict:
    """A record as its event: time (UTC), area, message, then the fields given with `extra=` (phase first)."""
    extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
    return {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "area": record.name.removeprefix(ROOT_LOGGER + "."), "message": record.getMessage(),
            **dict(sorted(extra.items(), key=lambda kv: kv[0] != "phase"))}


class EventsFile(logging.Handler):
    """Appends each record as an event to a file, flushed per line (opened at the first event: a run that logs
    nothing leaves no empty file)."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.INFO)
        self.path = path
        self._file = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = json.dumps(event(record), default=str) + "\n"
            if self._file is None:
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(line)  # logging holds the handler's lock around emit: one line at a time
            self._file.flush()
        except Exception:  # noqa: BLE001 - an event that cannot be written must not fail the run
            self.handleError(record)

    def close(self) -> None:
        with self.lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        super().close()


def install(path: Path) -> EventsFile:
    """An events file for every `kvpool` logger (a handler on their root)."""
    handler = EventsFile(path)
    logging.getLogger(ROOT_LOGGER).addHandler(handler)
    return handler


def uninstall(handler: EventsFile) -> None:
    logging.getLogger(ROOT_LOGGER).removeHandler(handler)
    handler.close()


def read(path: Path) -> list[dict]:
    """The events of a file, a line that is still being written left out."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.endswith("\n")]
