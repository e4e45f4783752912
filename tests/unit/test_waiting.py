"""wait_until: the one polling loop. Real clocks with small timeouts; every assertion holds however slow the
machine is (orders and counts, no durations from above)."""

from __future__ import annotations

import math
import time

import pytest

from harness.waiting import wait_until


def answers(*values):
    """A check that returns `values` one per call (the last one from then on), and counts its calls."""
    calls = []

    def check():
        calls.append(time.monotonic())
        return values[min(len(calls), len(values)) - 1]

    return check, calls


def test_returns_the_first_truthy_value():
    check, calls = answers(None, 0, "", {"pid": 7})
    assert wait_until(check, timeout_s=60, interval_s=0.001) == {"pid": 7}
    assert len(calls) == 4


def test_a_check_that_says_yes_at_once_is_called_once():
    check, calls = answers(42)
    assert wait_until(check, timeout_s=0, interval_s=10) == 42
    assert len(calls) == 1


def test_times_out_with_none_after_at_least_one_check():
    check, calls = answers(False)
    start = time.monotonic()
    assert wait_until(check, timeout_s=0.05, interval_s=0.01) is None
    assert time.monotonic() - start >= 0.05
    assert len(calls) >= 1


def test_waits_interval_s_between_checks():
    check, calls = answers(False)
    wait_until(check, timeout_s=0.1, interval_s=0.02)
    assert len(calls) >= 2
    assert all(b - a >= 0.02 * 0.9 for a, b in zip(calls, calls[1:]))


def test_an_exception_of_the_check_propagates_at_once():
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the process died")
        return False

    with pytest.raises(RuntimeError, match="the process died"):
        wait_until(check, timeout_s=math.inf, interval_s=0.001)
    assert len(calls) == 3


def test_progress_at_most_every_progress_every_s_with_the_elapsed_time():
    said = []
    wait_until(lambda: len(said) >= 3, timeout_s=math.inf, interval_s=0.005, progress=said.append,
               progress_every_s=0.03)
    assert len(said) == 3
    assert said[0] >= 0.03
    assert all(b - a >= 0.03 for a, b in zip(said, said[1:]))


def test_no_progress_when_the_first_check_says_yes():
    said = []
    assert wait_until(lambda: True, timeout_s=60, interval_s=1, progress=said.append, progress_every_s=0,
                      since=time.monotonic() - 100) is True
    assert said == []


def test_no_progress_after_the_timeout():
    said = []
    assert wait_until(lambda: False, timeout_s=5, interval_s=1, progress=said.append, progress_every_s=0,
                      since=time.monotonic() - 10) is None
    assert said == []


def test_since_counts_the_timeout_from_an_earlier_start():
    check, calls = answers(False)
    assert wait_until(check, timeout_s=5, interval_s=10, since=time.monotonic() - 10) is None
    assert len(calls) == 1  # the time was up already: one check, no sleep


def test_since_counts_progress_from_an_earlier_start():
    said = []
    wait_until(lambda: bool(said), timeout_s=math.inf, interval_s=0.001, progress=said.append, progress_every_s=30,
               since=time.monotonic() - 40)
    assert len(said) == 1 and said[0] >= 40  # due at once
