"""The fault rows' own check (tests/selftest/test_faults.py `check`) fails a run that went red for another cause: the
self-test cannot pass just because something failed. Each run here is what the suite would report for a different
fault with the same symptoms; beside it, the run the row's own fault gives (recorded from the self-test's messages)
passes the same check, so each red here is the cause's fragment and nothing else. No Docker: the leftover scan at
the check's end is stubbed."""

from __future__ import annotations

import pytest

from tests.selftest import test_faults
from tests.selftest.runner import SuiteRun
from tests.selftest.test_faults import FAULTS, check

ROW = {f.name: f for f in FAULTS}


@pytest.fixture(autouse=True)
def nothing_left(monkeypatch):
    monkeypatch.setattr(test_faults, "leftovers", lambda: [])


def red(failing: dict[str, str], verdict: str = "failure") -> SuiteRun:
    return SuiteRun(rc=1, output="", seconds=1.0, verdicts=dict.fromkeys(failing, verdict), messages=failing)


def test_device_row_rejects_a_container_that_failed_to_start_for_another_reason():
    row, test = ROW["device missing on the host"], "test_01_environment::test_hccn_conf_present"
    own = ("deployment: the container failed: docker could not start container 'kvpool-cpu-local': error gathering "
           'device information while adding custom device "/dev/kvpool-no-such-device": no such file or directory')
    check(row, red({test: own}, "error"))
    # docker's error for a port clash, not for the injected device: same test ids, same first words.
    other = ("deployment: the container failed: docker could not start container 'kvpool-cpu-local': driver failed "
             "programming external connectivity: Bind for 0.0.0.0:8002 failed: port is already allocated")
    with pytest.raises(AssertionError):
        check(row, red({test: other}, "error"))


def test_mooncake_row_rejects_a_master_that_failed_for_another_reason():
    row = ROW["mooncake not importable"]
    importable = "test_03_mooncake::test_mooncake_importable"
    own = {test: "deployment: the Mooncake master failed: exited during start-up; log tail: ModuleNotFoundError: "
                 "No module named 'mooncake.cli'" for test in row.expect}
    own[importable] = "`import mooncake, mooncake.store` failed in container kvpool-cpu-local"
    check(row, red(own))
    failing = {test: "deployment: the Mooncake master failed: exited during start-up; log tail: Address already in use"
               for test in row.expect}
    failing[importable] = own[importable]
    with pytest.raises(AssertionError, match="does not name the cause"):
        check(row, red(failing))


def test_served_name_row_rejects_a_404_for_another_path():
    row = ROW["served model name mismatch"]
    failing = {test: "instance-2: /v1/models lists ['qwen-typo']" for test in row.expect}
    test_404 = next(t for t in row.expect if "completion" in t)
    failing[test_404] = ("instance-2: POST /v1/completions answered 404: {\"message\": \"The model `qwen` does not "
                         "exist.\"}")
    check(row, red(failing))
    failing[test_404] = "instance-2: POST /v1/completions answered 404: {\"detail\": \"Not Found\"}"  # no such route
    with pytest.raises(AssertionError, match="The model `qwen` does not exist"):
        check(row, red(failing))
