"""harness/progress.py: the named loggers' records printed as the lines the suite printed before (`[area] message` on
the standard output, flushed at once, in order with print), kept out of pytest's log capture, configured once."""

from __future__ import annotations

import logging
import os
import re
import select
import subprocess
import sys
import time

from harness import progress
from harness.config import ROOT
from harness.progress import line, line_pattern, logger


def test_a_record_is_its_area_and_message_on_the_stdout_of_the_moment(capsys):
    # The handler was made at import, before capsys swapped sys.stdout: the line still lands in the capture.
    logger("deployment").info("container: starting")
    logger("kit").debug("not progress")  # below INFO: not printed
    assert capsys.readouterr().out == "[deployment] container: starting\n"


def test_pytests_log_capture_does_not_take_the_records(caplog, capsys):
    """pytest 9 hands its capture handler to non-propagating loggers too; log_level (pyproject.toml) keeps it at
    WARNING, so progress is reported once, as captured stdout."""
    logger("deployment").info("master: starting")
    logging.getLogger("elsewhere").warning("not ours")  # control: the capture does take a warning
    assert [r.name for r in caplog.records] == ["elsewhere"]
    assert capsys.readouterr().out == "[deployment] master: starting\n"


def test_configuring_again_adds_no_second_handler(capsys):
    progress._console()
    logger("repeat").info("once")
    assert capsys.readouterr().out == "[repeat] once\n"


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": ""})


def test_lines_keep_their_order_with_prints_through_a_pipe():
    code = "from harness.progress import logger\nprint('a')\nlogger('kit').info('b')\nprint('c')\n"
    out, _ = _python(code).communicate(timeout=60)
    assert out == "a\n[kit] b\nc\n"


def _first_line_within(code: str, seconds: float) -> str | None:
    """The first line the program writes to its pipe within `seconds`, while it still runs (it then sleeps)."""
    proc = _python(code + "import time\ntime.sleep(60)\n")
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.2)[0]:
                return proc.stdout.readline()  # type: ignore[union-attr]
        return None
    finally:
        proc.kill()
        proc.wait()


def test_each_line_is_flushed_at_once_into_a_pipe():
    # Through a pipe stdout is block-buffered: a line shows while the program runs only if it was flushed.
    assert _first_line_within("from harness.progress import logger\nlogger('kit').info('downloading wheels')\n",
                              30) == "[kit] downloading wheels\n"
    # Control: an unflushed print stays in the buffer while the program sleeps.
    assert _first_line_within("print('downloading wheels')\n", 2) is None


def test_a_line_pattern_matches_its_area_and_message_only():
    pattern = line_pattern("deployment", r"step 1 cold: starting")
    assert re.search(pattern, line("deployment", "step 1 cold: starting"))
    assert not re.search(pattern, line("kit", "step 1 cold: starting"))
    assert not re.search(pattern, line("deployment", "step 2 local hit: starting"))
    assert not re.search(line_pattern("kit", "x"), "kit x")  # the brackets are literal, not a character class


def test_an_area_shown_live_goes_to_its_writer_alone_and_still_reaches_the_other_handlers(capsys):
    written, reached = [], []
    other = logging.Handler()
    other.emit = lambda record: reached.append(record.getMessage())  # the run's events file, say
    logging.getLogger(progress.ROOT_LOGGER).addHandler(other)
    try:
        with progress.shown_live("endurance", written.append):
            logger("endurance").info("60/3600 s: 12 requests")
            logger("deployment").info("instance-1: stopped")  # another area: the standard output, as always
        logger("endurance").info("after")  # control: outside, the standard output again
    finally:
        logging.getLogger(progress.ROOT_LOGGER).removeHandler(other)
    assert written == ["[endurance] 60/3600 s: 12 requests"]
    assert capsys.readouterr().out == "[deployment] instance-1: stopped\n[endurance] after\n"
    assert reached == ["60/3600 s: 12 requests", "instance-1: stopped", "after"]
