"""harness/events.py: the run's events file, one JSON line per record of a `kvpool.*` logger at INFO or above, with
the fields a record carries through `extra=` (its phase first), flushed per line so that a killed run keeps them."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from harness import events
from harness.config import ROOT
from harness.progress import logger


@pytest.fixture
def written(tmp_path):
    """An events file on the kvpool loggers for one test; returns the events read back."""
    path = tmp_path / events.NAME
    handler = events.install(path)
    yield lambda: events.read(path)
    events.uninstall(handler)


def test_a_record_with_a_phase_and_one_without(written, capsys):
    before = datetime.now(timezone.utc)
    logger("deployment").info("container: starting", extra={"phase": "container", "at": "begin"})
    logger("kit").info("downloading wheels into .cache/wheelhouse")
    first, second = written()
    assert {k: v for k, v in first.items() if k != "time"} == {
        "area": "deployment", "message": "container: starting", "phase": "container", "at": "begin"}
    assert list(first)[:4] == ["time", "area", "message", "phase"]  # the phase first of the record's own fields
    assert second == {"time": second["time"], "area": "kit", "message": "downloading wheels into .cache/wheelhouse"}
    at = datetime.fromisoformat(first["time"])
    assert at.utcoffset() == timedelta(0) and before - timedelta(milliseconds=1) <= at <= datetime.now(timezone.utc)
    assert capsys.readouterr().out.splitlines() == ["[deployment] container: starting",
                                                    "[kit] downloading wheels into .cache/wheelhouse"]  # as before


def test_only_kvpool_records_at_info_or_above_are_events(written):
    logging.getLogger("urllib3").warning("Retrying")  # another library's: not ours
    logging.getLogger("kvpoolish").warning("a name that only starts alike")
    logger("kit").debug("below INFO")
    assert written() == []
    logger("kit").info("control")  # the same logger at INFO is one
    assert [e["message"] for e in written()] == ["control"]


def test_a_value_that_is_not_json_is_written_as_its_text(written, tmp_path):
    logger("deployment").info("wrote", extra={"phase": "x", "path": tmp_path})
    assert written()[0]["path"] == str(tmp_path)


def _killed_after_its_first_write(code: str, path, wait_s: float) -> list[dict]:
    """Run `code` (which writes an event to `path`, then sleeps), SIGKILL it as soon as the file holds a line or
    after wait_s, and read the file back: what a run killed by SIGKILL (a Jenkins timeout's last resort) leaves."""
    proc = subprocess.Popen([sys.executable, "-c", code + "\nimport time\ntime.sleep(60)\n"], cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": ""})
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not (path.is_file() and path.read_text().endswith("\n")):
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    return events.read(path)


def test_each_event_is_on_disk_as_it_is_logged_so_a_killed_run_keeps_it(tmp_path):
    path = tmp_path / events.NAME
    code = ("from pathlib import Path\nfrom harness import events\nfrom harness.progress import logger\n"
            f"events.install(Path({str(path)!r}))\n"
            "logger('deployment').info('master: starting', extra={'phase': 'master', 'at': 'begin'})")
    got = _killed_after_its_first_write(code, path, 30)
    assert [(e["phase"], e["at"]) for e in got] == [("master", "begin")]
    # Control: the same line written without a flush stays in the killed process's buffer.
    control = tmp_path / "control.jsonl"
    line = json.dumps({"phase": "master", "at": "begin"})
    assert _killed_after_its_first_write(f"f = open({str(control)!r}, 'a')\nf.write({line!r} + '\\n')", control,
                                         2) == []


class _Container:
    """A container whose process `pid` 5 dies on the signal named `dies_on` (or never)."""

    def __init__(self, dies_on: str | None):
        self.dies_on, self.alive = dies_on, True

    def is_running(self) -> bool:
        return True

    def exec(self, argv):
        if self.dies_on and any(self.dies_on in a for a in argv):
            self.alive = False

    def read_file(self, path):
        return "5 (mooncake_master) S 1" if self.alive else None


@pytest.mark.parametrize(("dies_on", "outcome"), [("TERM", "stopped"), ("KILL", "killed after SIGTERM was ignored")])
def test_a_stopped_process_is_an_event_with_its_name_and_outcome(written, dies_on, outcome):
    from harness.runtime import Process

    Process(_Container(dies_on), "mooncake-master", 5, ["mooncake_master"]).stop(timeout=0.3)
    [e] = written()
    assert (e["phase"], e["process_name"], e["outcome"]) == ("process stopped", "mooncake-master", outcome)
