"""`pytest --plan`: the plan of every target renders as a shell script bash accepts and as JSON, without Docker; each
command in the script is, word for word, the argv the plan holds (bash itself reads them back); the plan is built from
the objects the run executes (the launcher's exec of start_master and start_instance, the container's keys), so a
change of one value in a target changes that one line; and a real `pytest --plan` on the Atlas target exits 0 in
seconds having started nothing, as `--collect-only` does on a machine too small for its pool."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, replace
from types import SimpleNamespace

import docker
import pytest

from commands import plan_render
from commands.plan_render import as_json
from commands.run_plan import Command, RunPlan, build
from harness import mooncake, runtime, serving
from harness.config import ROOT, available_targets, load_target
from harness.departures import container_keys, docker_run_keys
from harness.plan import describe_instance

NOWHERE = "unix:///nonexistent/docker.sock"


@pytest.fixture(autouse=True)
def no_docker(monkeypatch):
    """No daemon to reach, and any docker client made at all fails the test."""
    monkeypatch.setenv("DOCKER_HOST", NOWHERE)

    def refuse(*args, **kwargs):
        raise AssertionError("the plan made a docker client")

    monkeypatch.setattr(docker.DockerClient, "__init__", refuse)
    monkeypatch.setattr(docker.APIClient, "__init__", refuse)


def plans(name: str, **options) -> tuple[RunPlan, str, str]:
    p = build(load_target(name), name, **options)
    return p, plan_render.shell(p), as_json(p)


def commands(p: RunPlan) -> list[Command]:
    return [c for s in p.sections for a in s.actions for c in a.commands]


def bash(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], capture_output=True, timeout=60)


@pytest.mark.parametrize("name", available_targets())
@pytest.mark.parametrize("options", [{}, {"attach": True}, {"keep": True}], ids=["run", "attach", "keep"])
def test_every_target_renders_as_shell_and_json(name, options):
    t = load_target(name)
    p, text, data = plans(name, **options)
    checked = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    loaded = json.loads(data)
    assert json.dumps(loaded, indent=1) + "\n" == data  # round-trips
    assert loaded["deployment"]["instances"] == [asdict(describe_instance(t, x)) for x in t.instances]
    assert [i["argv"] for i in loaded["deployment"]["instances"]] == [describe_instance(t, x).argv
                                                                       for x in t.instances]
    titles = [s["title"] for s in loaded["sections"]]
    assert ("image" in titles) != bool(options.get("attach")) and titles[-1].startswith("teardown")
    for x in t.instances:
        assert shlex.join(["--kv-transfer-config", x.kv_transfer_config.render()]) in text
    assert ("docker run" in text) != bool(options.get("attach")) and "mooncake_master" in text


@pytest.mark.parametrize("name", available_targets())
def test_bash_reads_each_command_back_as_its_argv(name, tmp_path):
    """Every command line of the script, run by bash with each argument printed, gives the argv the plan holds (the
    scripts exactly, as read into their variables); every heredoc gives the file's content."""
    p, _, _ = plans(name, client="ours")
    q = plan_render._Quoter(p)
    defs = [line for n, s in p.scripts.items() for line in plan_render._script(n, s)]
    script = ["args() { printf '%s\\0' \"$@\"; printf '\\1'; }", *defs, "KVPOOL_RUN_DIR=RUN KVPOOL_IMAGE=IMAGE"]
    cs = commands(p)
    for c in cs:
        script.append("args " + plan_render._command(replace(c, stdin=None, output=None, assign=None), q))
    out = bash("\n".join(script))
    assert out.returncode == 0, out.stderr
    got = [r.split(b"\0")[:-1] for r in out.stdout.split(b"\1")[:-1]]
    image = p.variables["KVPOOL_IMAGE"]["value"]
    want = [[(("IMAGE" if a == image else a.replace("$KVPOOL_RUN_DIR", "RUN").replace("$KVPOOL_IMAGE", "IMAGE"))
              .encode()) for a in c.argv] for c in cs]
    assert got == want
    files = [c for c in cs if c.stdin is not None]
    assert files and all(
        bash(plan_render._command(replace(c, lines=[["cat"]]), q)).stdout.decode() == c.stdin for c in files)


def test_the_requests_are_sent_as_the_plan_holds_them():
    p, _, _ = plans("atlas-800t-a2")
    q = plan_render._Quoter(p)
    requests = [a.request for s in p.sections for a in s.actions if a.request is not None]
    assert len(requests) > 10
    for r in requests:
        argv = shlex.split(plan_render._curl(r, q))
        assert argv[-1] == r.url and argv[0] == "curl"
        assert (json.loads(argv[argv.index("-d") + 1]) if "-d" in argv else None) == r.body


def test_the_warm_up_is_in_the_plan_before_step_1_only_when_asked():
    def stage5(name: str) -> list[str]:
        p, _, _ = plans(name)
        return [a.what for s in p.sections for a in s.actions if a.request is not None and (
            a.what.startswith(("warm-up", "step 1")))]

    # atlas-800t-a2-kvpool takes the guide's warm-up: each instance's set to it, then to the other, then step 1.
    assert [w.split(":")[0] for w in stage5("atlas-800t-a2-kvpool")] == [
        "warm-up set 1 on instance-1", "warm-up set 1 on instance-2", "warm-up set 2 on instance-2",
        "warm-up set 2 on instance-1", "step 1 cold on instance-1"]
    assert "8 prompts of 8192 tokens starting with '~'" in stage5("atlas-800t-a2-kvpool")[0]
    assert not any(w.startswith("warm-up") for w in stage5("atlas-800t-a2"))  # the seed sends nothing before step 1


def test_the_docker_run_shown_is_the_container_the_sdk_is_asked_for():
    for name in available_targets():
        p, _, _ = plans(name)
        runs = [c.argv for c in commands(p) if "run" in c.argv[:4] and c.argv[0] == "docker"]
        assert len(runs) == len(p.deployment.containers)
        for argv, run in zip(runs, p.deployment.containers):
            keys = docker_run_keys(["docker", *argv[argv.index("run"):]])  # without the node's -H
            assert keys.pop("option -d") is True and keys == container_keys(run)


class _Launched(Exception):
    pass


class _Box:
    """A stand-in container: records what Process.start runs in it."""

    name = "vllm-ascend"

    def __init__(self):
        self.execs, self.launched = [], []
        self.handle = SimpleNamespace(exec_run=lambda argv, **kw: self.launched.append((argv, kw)))

    def exec(self, argv, env=None, timeout=60, workdir=None):
        self.execs.append(argv)
        return runtime.ExecResult(0, "")

    def read_file(self, path):
        return "4242" if path.endswith(".pid") else None  # its pid; no /proc/4242/stat: it is gone when stopped

    def is_running(self):
        return True


def test_the_master_and_instances_start_as_the_plan_shows(monkeypatch):
    """start_master and start_instance, the run's own code, exec into the container exactly the plan's commands."""
    t = load_target("atlas-800t-a2")
    monkeypatch.setattr(mooncake, "port_accepts", lambda *a, **k: False)
    monkeypatch.setattr(serving, "port_accepts", lambda *a, **k: False)

    def launched_only(*args, **kwargs):  # the master's readiness is not this test's
        raise _Launched

    monkeypatch.setattr(mooncake, "wait_until", launched_only)
    box = _Box()
    with pytest.raises(_Launched):
        mooncake.start_master(box, t)
    for x in t.instances:
        serving.start_instance(box, t, x)
    p, _, _ = plans("atlas-800t-a2")
    shown = [a.commands for s in p.sections if s.title in ("master", "instances") for a in s.actions]
    assert len(shown) == 1 + len(t.instances) == len(box.launched)
    assert [argv for cs in shown for argv in (cs[0].argv, cs[1].argv)] == [
        ["docker", "exec", "vllm-ascend", *argv] for argv in box.execs if argv[0] in ("mkdir", "rm")]
    for cs, (argv, kw) in zip(shown, box.launched):
        launch = cs[2].argv
        at = launch.index("vllm-ascend")
        assert launch[:3] == ["docker", "exec", "-d"] and launch[at + 1:] == argv and kw["detach"]
        options = list(zip(launch[3:at:2], launch[4:at:2]))
        assert dict(v.split("=", 1) for flag, v in options if flag == "-e") == kw["environment"]
        assert dict(options).get("-w") == kw["workdir"]


def change(name: str, edit) -> tuple[list[str], list[str]]:
    """The lines of the plan that differ when `edit` changes one value of the target: (before, after)."""
    t = load_target(name)
    changed = edit(t)
    one, two = (plan_render.shell(build(x, name)).splitlines() for x in (t, changed))
    assert len(one) == len(two)
    return [a for a, b in zip(one, two) if a != b], [b for a, b in zip(one, two) if a != b]


def _instance_arg(t, value):
    x = t.instances[0]
    args = list(x.args)
    args[args.index("--max-model-len") + 1] = value
    return t.model_copy(update={"instances": [x.model_copy(update={"args": args}), *t.instances[1:]]})


def test_one_value_changed_in_the_target_changes_that_line_only():
    assert change("atlas-800t-a2", lambda t: _instance_arg(t, "12800")) == (
        ["    --max-model-len 25600 \\"], ["    --max-model-len 12800 \\"])
    before, after = change("atlas-800t-a2", lambda t: t.model_copy(update={"container": t.container.model_copy(
        update={"shm_size": "2g"})}))
    assert (before, after) == (["    --shm-size 1g \\"], ["    --shm-size 2g \\"])
    cfg = load_target("atlas-800t-a2").mooncake.config
    before, after = change("atlas-800t-a2", lambda t: t.model_copy(update={"mooncake": t.mooncake.model_copy(
        update={"config": cfg.model_copy(update={"global_segment_size": 1 << 30})})}))
    assert (before, after) == (['  "global_segment_size": 107374182400'], ['  "global_segment_size": 1073741824'])


def pytest_run(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["DOCKER_HOST"] = NOWHERE
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    return run, time.monotonic() - start


def run_folders() -> set[str]:
    return {p.name for p in (ROOT / "reports").glob("atlas-800t-a2-*")}


def test_pytest_plan_on_the_atlas_target_starts_nothing():
    """With no Docker daemon: exit 0 in seconds, the plan on stdout, no run folder made (no fixture ran)."""
    before = run_folders()
    run, seconds = pytest_run("-m", "acceptance", "--target", "atlas-800t-a2", "--plan", "tests/acceptance")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert seconds < 30
    for words in ("docker run", "vllm serve", "mooncake_master", "hccn_tool -i 7 -link -g", "docker rm -f"):
        assert words in run.stdout, words
    assert "Traceback" not in run.stderr and run_folders() == before
    run, _ = pytest_run("--target", "atlas-800t-a2", "--plan", "--plan-format", "json")
    assert run.returncode == 0 and json.loads(run.stdout)["target"] == "atlas-800t-a2"


def test_pytest_plan_of_a_bad_target_is_a_usage_error():
    run, _ = pytest_run("--target", "no-such-target", "--plan")
    assert run.returncode == 4 and "no such file" in run.stderr and not run.stdout.strip()


def test_collect_only_lists_the_atlas_stages_on_a_machine_smaller_than_its_pool():
    """The pool's 808 GiB would not fit here: the run checks that, but a collection runs nothing."""
    run, _ = pytest_run("--collect-only", "-q", "-m", "acceptance", "--target", "atlas-800t-a2", "tests/acceptance")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "test_link_up[device7]" in run.stdout
