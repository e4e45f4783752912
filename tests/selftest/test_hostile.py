"""Hostile values are data: shell metacharacters in env values, in the served model name (which goes into `vllm
serve`'s arguments and every request) and in a volume's host path reach their programs verbatim and are never
executed, neither inside the container nor on this host, where the suite, its clients and the kit run."""

from __future__ import annotations

import pytest

from harness.config import ROOT

from .runner import faulty_target, leftovers, run_suite

pytestmark = pytest.mark.kit


def test_shell_metacharacters_are_never_executed(tmp_path):
    marker_dir = tmp_path / "marker; $(touch x) `touch y`"  # the host path itself is hostile too
    marker_dir.mkdir()
    inside = "/kvpool-marker/pwned"  # inside the container; bind-mounted from marker_dir
    host = tmp_path / "pwned-on-the-host"  # the same commands, run by a shell on this host, would make this file
    strays = [ROOT / "x", ROOT / "y", tmp_path / "x", tmp_path / "y"]  # the path's own commands, run in either cwd
    assert not any(p.exists() for p in strays), "a file of the test's markers exists before the run"
    touch = f"touch {inside} {host}"
    hostile = f"x; {touch}; $({touch}) `{touch}` \\ \" ' \n {touch}"

    def change(d):
        d["container"]["volumes"].append({"host": str(marker_dir), "container": "/kvpool-marker"})
        d["container"]["env"] = {"KVPOOL_HOSTILE": hostile}
        for x in d["instances"]:
            x["env"]["KVPOOL_HOSTILE"] = hostile
        d["model"]["served_name"] = f"qwen;$({touch})`{touch}`"

    run = run_suite(tmp_path, f"--target={faulty_target(tmp_path, change)}", "tests/acceptance/test_04_serving.py")
    assert run.rc == 0, run.output[-3000:]  # the odd served name is served and answered as given
    assert set(run.verdicts.values()) == {"passed"}, run.failing()
    assert list(marker_dir.iterdir()) == [], "a shell metacharacter in the target was executed in the container"
    assert not host.exists(), "a shell metacharacter in the target was executed on this host"
    assert not any(p.exists() for p in strays), "the hostile volume path was executed as a command"
    assert leftovers() == []
