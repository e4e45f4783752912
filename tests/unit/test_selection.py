"""Plain `pytest` starts no deployment, and a run that names the stages without selecting them says how to: real
collections (`--collect-only`, nothing runs) in a subprocess, from the repository's root as a user types them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.config import ROOT

UNIT = "tests/unit/"
HOW = "run only when selected with -m acceptance"


def collect(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def items(run: subprocess.CompletedProcess) -> list[str]:
    return [line for line in run.stdout.splitlines() if "::" in line]


def test_plain_pytest_collects_only_the_unit_tests():
    run = collect()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert items(run) and all(i.startswith(UNIT) for i in items(run)), [i for i in items(run) if UNIT not in i][:5]
    assert "self-tests not selected: they build images and start deployments" in run.stdout


def test_the_self_tests_run_when_their_marker_selects_them():  # and with --tier: tests/unit/test_tiers.py
    run = collect("-m", "kit", "tests/selftest")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert any(i.startswith("tests/selftest/") for i in items(run))


@pytest.mark.parametrize("args", [["--target", "cpu-local", "tests/acceptance"], ["--target=cpu-local"],
                                  ["tests/acceptance"]])
def test_stages_named_but_not_selected_is_a_usage_error_that_says_how(args):
    run = collect(*args)
    assert run.returncode == 4 and HOW in run.stderr and "Traceback" not in run.stderr, run.stdout[-2000:] + run.stderr


def test_the_stages_are_still_collected_with_their_marker():
    run = collect("-m", "acceptance", "--target", "cpu-local", "tests/acceptance/test_02_container.py")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert items(run) and all(i.startswith("tests/acceptance/test_02_container.py::") for i in items(run))


def test_history_that_is_not_a_folder_is_a_usage_error():
    run = collect("-m", "acceptance", "--target", "cpu-local", "--history", "no-such-folder",
                  "tests/acceptance/test_06_nights.py")
    assert run.returncode == 4 and "--history no-such-folder is not a directory" in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr


def test_the_nights_comparison_is_a_test_of_its_own_after_stage_5():
    run = collect("-m", "acceptance", "--target", "cpu-local", "--history", "tests/unit/recordings/results",
                  "tests/acceptance")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert items(run)[-1] == "tests/acceptance/test_06_nights.py::test_tonight_against_the_last_nights"
    assert any(i.startswith("tests/acceptance/test_05_kv_pool.py::") for i in items(run))
