"""Hostile values are data: shell metacharacters in env values and in the served model name (which goes into
`vllm serve`'s arguments and every request) reach their programs verbatim and are never executed."""

import pytest

from .runner import faulty_target, leftovers, run_suite

pytestmark = pytest.mark.kit


def test_shell_metacharacters_are_never_executed(tmp_path):
    marker_dir = tmp_path / "marker; $(touch x) `touch y`"  # the host path itself is hostile too
    marker_dir.mkdir()
    marker = "/kvpool-marker/pwned"  # inside the container; bind-mounted from marker_dir
    hostile = f"x; touch {marker}; $(touch {marker}) `touch {marker}` \\ \" ' \n touch {marker}"

    def change(d):
        d["container"]["volumes"].append({"host": str(marker_dir), "container": "/kvpool-marker"})
        d["container"]["env"] = {"KVPOOL_HOSTILE": hostile}
        for x in d["instances"]:
            x["env"]["KVPOOL_HOSTILE"] = hostile
        d["model"]["served_name"] = f"qwen;$(touch {marker})`touch {marker}`"

    run = run_suite(tmp_path, f"--target={faulty_target(tmp_path, change)}", "tests/acceptance/test_04_serving.py")
    assert run.rc == 0, run.output[-3000:]  # the odd served name is served and answered as given
    assert set(run.verdicts.values()) == {"passed"}, run.failing()
    assert list(marker_dir.iterdir()) == [], "a shell metacharacter in the target was executed"
    assert leftovers() == []
