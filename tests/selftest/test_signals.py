"""Teardown under signals: Ctrl-C (SIGINT) or a Jenkins abort (SIGTERM) at a given moment of the run, from
the kit build to the benchmark, leaves no container, process, port or temp file behind, within 30 s; and a
crash inside a fixture still tears down what was started before it."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid

import docker
import pytest
from docker.errors import ImageNotFound

from harness.config import resolve_repo_path
from kit import build

from .runner import INTERRUPTED, TARGET, Moment, faulty_target, happened, interrupt_at, leftovers, run_suite, torn_down

pytestmark = pytest.mark.kit

# The event the run logs at each moment (its events file, docs/reports.md: kit/build.py, harness/deployment.py,
# fixtures/deployment.py); the signal goes right after.
MOMENTS = {
    "base image build": Moment("debootstrap stage", line=r"Installing core packages"),  # chroot, /proc mounted
    "wheel download": Moment("wheel download"),
    "image build": Moment("docker build step", line=r": RUN "),  # a step container running
    "container start": Moment("container", at="begin"),
    "instance start": Moment("instances launched"),  # /health is being waited for
    "benchmark": Moment("step 1 cold", at="begin"),
}
TEARDOWN_LIMIT_S = 30
UNBUILT_BASE = [*build.BASE_PACKAGES, "less"]  # a base no image was built from, so the run starts with debootstrap


@pytest.fixture
def run_args(request, tmp_path):
    """Arguments that make the run reach its moment whatever the caches hold: for a build moment, something the kit
    has not built (a base package list patched in by a plugin, whose image is removed first; an image recipe changed
    by a comment unique to this run, so neither its lock's wheelhouse stamp nor its image tag exists). Whatever an
    uninterrupted build made is deleted afterwards."""
    moment = request.node.callspec.params["moment"]
    client = docker.from_env()

    def remove_built() -> None:
        for image in [build.base_tag(UNBUILT_BASE), *(t for i in client.images.list("kvpool-sigtest") for t in i.tags)]:
            try:
                client.images.remove(image, force=True)
            except ImageNotFound:
                pass

    remove_built()
    if moment == "base image build":
        if shutil.which("debootstrap") is None:
            pytest.fail("this moment needs debootstrap (scripts/setup installs it)")
        (tmp_path / "unbuilt_base.py").write_text(f"from kit import build\nbuild.BASE_PACKAGES = {UNBUILT_BASE!r}\n")
        yield ["-p", "unbuilt_base"], {**os.environ, "PYTHONPATH": str(tmp_path)}
    elif moment in ("wheel download", "image build"):
        recipe = tmp_path / "recipe"
        shutil.copytree(resolve_repo_path(TARGET.container.build), recipe)
        # A changed lock makes the kit download wheels again; a changed Dockerfile only rebuilds the image.
        changed = recipe / ("locks/vllm-0.32.0.lock" if moment == "wheel download" else "Dockerfile")
        with changed.open("a") as f:
            f.write(f"# a recipe no image was built from: {uuid.uuid4()}\n")
        target = faulty_target(tmp_path, lambda d: d["container"].update(image="kvpool-sigtest", build=str(recipe)))
        yield ["--target", str(target)], None
    else:
        yield [], None
    remove_built()


# Twice each in the full tier (tests/selftest/tiers.py): a teardown race shows on a repeat.
@pytest.mark.parametrize("attempt", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_signal_leaves_nothing_behind(moment, signum, attempt, run_args, tmp_path):
    args, env = run_args
    temp_before = set(os.listdir(tempfile.gettempdir()))
    run = interrupt_at(MOMENTS[moment], signum, *args, events=tmp_path / "events.jsonl", env=env)
    print(f"{moment}, {signal.Signals(signum).name} #{attempt}: exited {run.took:.1f} s after the signal")
    # The signal ended the run (pytest's "interrupted" exit and its KeyboardInterrupt summary), not its own end.
    assert run.rc == INTERRUPTED and "KeyboardInterrupt" in run.output, (
        f"exit {run.rc}: the signal did not interrupt the run:\n{run.output[-3000:]}")
    assert run.took < TEARDOWN_LIMIT_S, f"teardown took {run.took:.0f} s:\n{run.output[-3000:]}"
    assert torn_down(run.events), f"no interrupt, then teardown begun and ended, in its events:\n{run.output[-3000:]}"
    assert leftovers() == [], run.output[-3000:]
    assert set(os.listdir(tempfile.gettempdir())) - temp_before == set(), "temp files left behind"


# Through the documented entry point: tox must pass the signal on and wait for the teardown (tox.ini, toxfile.py).
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_signal_through_tox_leaves_nothing_behind(signum, tmp_path):
    temp_before = set(os.listdir(tempfile.gettempdir()))
    # The run's reports go to tmp_path: a user's last reports/ stay as they were.
    run = interrupt_at(MOMENTS["instance start"], signum, f"--alluredir={tmp_path / 'allure'}",
                       f"--junitxml={tmp_path / 'junit.xml'}", events=tmp_path / "events.jsonl", tox=True,
                       wait_s=TEARDOWN_LIMIT_S + 30)
    print(f"tox, instance start, {signal.Signals(signum).name}: exited {run.took:.1f} s after the signal")
    assert run.rc != 0 and "KeyboardInterrupt" in run.output, (
        f"exit {run.rc}: the signal did not interrupt the run:\n{run.output[-3000:]}")
    assert run.took < TEARDOWN_LIMIT_S, f"teardown took {run.took:.0f} s:\n{run.output[-3000:]}"
    assert torn_down(run.events), f"no interrupt, then teardown begun and ended, in its events:\n{run.output[-3000:]}"
    assert leftovers() == [], run.output[-3000:]
    assert set(os.listdir(tempfile.gettempdir())) - temp_before == set(), "temp files left behind"


CRASH = '''
import pytest
from harness import serving
def pytest_configure(config):
    def crash(*args, **kwargs):
        raise RuntimeError("injected crash inside the instances fixture")
    serving.start_instances = crash
'''


def test_crash_inside_a_fixture_tears_down_what_came_before(tmp_path):
    (tmp_path / "crash_plugin.py").write_text(CRASH)
    run = run_suite(tmp_path, "-p", "crash_plugin", "tests/acceptance/test_04_serving.py",
                    env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert run.rc == 1 and set(run.verdicts.values()) == {"error"}, run.output[-3000:]
    assert all("injected crash" in m for m in run.failing().values()), run.failing()
    assert happened(run.events, Moment("container removed", container=TARGET.container.name)), run.output[-3000:]
    assert leftovers() == []
