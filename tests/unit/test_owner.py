"""Another run's deployment is not yours (harness/owner.py, harness/runtime.py's claims): what a run labels, and what
it does with a container or network that already holds its name. No Docker: the claims run against a stand-in
client."""

from __future__ import annotations

import pytest
from docker.errors import NotFound

from harness.owner import FOREIGN, LABEL, OURS, REFUSE, REPLACE, Owner, decide, refusal
from harness.runtime import AnotherRunsDeployment, DeploymentError, claim_container, claim_network

ME = Owner("cpu-local-20261203-020000", "2026-12-03T02:00:00+00:00", "jenkins", "atlas1", 4100, kept=False)
COLLEAGUE = Owner("cpu-local-20261202-170512", "2026-12-02T17:05:12+00:00", "alice", "atlas1", 2222, kept=True)


def test_a_run_labels_what_it_starts_with_its_owner():
    assert COLLEAGUE.labels("deployment") == {
        LABEL: "deployment", f"{LABEL}.run": "cpu-local-20261202-170512",
        f"{LABEL}.started": "2026-12-02T17:05:12+00:00", f"{LABEL}.user": "alice",
        f"{LABEL}.host": "atlas1", f"{LABEL}.pid": "2222", f"{LABEL}.kept": "true"}
    assert ME.labels("network")[LABEL] == "network" and ME.labels("network")[f"{LABEL}.kept"] == "false"


def test_this_process_names_its_user_host_pid_and_a_utc_start():
    me = Owner.this_process("r", kept=True)
    assert me.run == "r" and me.kept and me.user and me.host and me.pid > 0
    assert me.started.endswith("+00:00") and "T" in me.started


def test_a_user_without_a_name_is_named_by_uid(monkeypatch):
    def no_name():
        raise KeyError("getpwuid(): uid not found: 12345")

    monkeypatch.setattr("getpass.getuser", no_name)
    assert Owner.this_process("r").user.startswith("uid ")


@pytest.mark.parametrize("labels, replace, expected", [
    (None, False, FOREIGN),
    ({}, True, FOREIGN),  # not the suite's: the flag does not reach it
    (ME.labels("network"), True, FOREIGN),  # a network's labels on a container: not a suite container
    (ME.labels("deployment"), False, OURS),
    (COLLEAGUE.labels("deployment"), False, REFUSE),
    (COLLEAGUE.labels("deployment"), True, REPLACE),
    # Same run id, another process (two runs started in the same second): not ours.
    (Owner(ME.run, ME.started, ME.user, ME.host, ME.pid + 1, False).labels("deployment"), False, REFUSE),
    # Same run id and pid on another host sharing the daemon: not ours.
    (Owner(ME.run, ME.started, ME.user, "atlas2", ME.pid, False).labels("deployment"), False, REFUSE),
    # Made by the suite before it wrote owners: another run's.
    ({LABEL: "deployment", f"{LABEL}.run": "cpu-local-20261101-000000"}, False, REFUSE),
    # The same user's own earlier run is another run too: only the flag removes it.
    (Owner("cpu-local-20261203-013000", "x", ME.user, ME.host, 17, False).labels("deployment"), False, REFUSE),
])
def test_only_this_runs_own_or_the_flag_removes_a_suite_object(labels, replace, expected):
    assert decide(labels, "deployment", ME, replace) == expected


def test_the_refusal_says_whose_it_is_and_how_to_remove_it():
    text = refusal("container", "kvpool-cpu-local", COLLEAGUE.labels("deployment"), "running",
                   "docker rm -f kvpool-cpu-local", "To run in it as it is instead, use --attach.")
    assert text == ("container 'kvpool-cpu-local' (running) belongs to another run of this suite: run "
                    "cpu-local-20261202-170512, started 2026-12-02T17:05:12+00:00 by alice on host atlas1 (pid 2222), "
                    "kept on purpose with --keep-deployment. It is left alone. To remove it and start this run's own, "
                    "add --replace-deployment, or remove it by hand: docker rm -f kvpool-cpu-local. To run in it as "
                    "it is instead, use --attach.")
    running = refusal("container", "n", ME.labels("deployment"), "running", "")
    assert "not kept: its run is still running, or was killed" in running
    old = refusal("network", "n", {LABEL: "network", f"{LABEL}.run": "r"}, "", "")
    assert "run r, started unknown by unknown on host unknown (pid unknown)" in old


class Thing:
    """A stand-in container or network: its labels, status, and whether it was removed."""

    def __init__(self, labels: dict[str, str]):
        self.labels, self.status, self.removed = labels, "running", False
        self.attrs = {"Labels": labels}
        self.containers: list[Thing] = []

    def remove(self, force: bool = False) -> None:
        self.removed = True


class Things:
    def __init__(self, name: str, thing: Thing | None):
        self.name, self.thing = name, thing

    def get(self, name: str) -> Thing:
        if self.thing is None or name != self.name or self.thing.removed:
            raise NotFound(name)
        return self.thing


class Client:
    def __init__(self, thing: Thing | None):
        self.containers = self.networks = Things("kvpool-cpu-local", thing)


@pytest.mark.parametrize("claim, kind", [(claim_container, "deployment"), (claim_network, "network")])
def test_another_runs_object_is_left_alone_without_the_flag(claim, kind):
    theirs = Thing(COLLEAGUE.labels(kind))
    with pytest.raises(AnotherRunsDeployment) as e:
        claim(Client(theirs), "kvpool-cpu-local", ME, replace=False)
    assert not theirs.removed
    assert all(s in str(e.value) for s in ("cpu-local-20261202-170512", "alice", "2026-12-02T17:05:12+00:00",
                                           "--keep-deployment", "--replace-deployment"))


@pytest.mark.parametrize("claim, kind", [(claim_container, "deployment"), (claim_network, "network")])
def test_the_flag_replaces_another_runs_object_and_a_runs_own_is_removed(claim, kind):
    theirs, mine = Thing(COLLEAGUE.labels(kind)), Thing(ME.labels(kind))
    assert claim(Client(theirs), "kvpool-cpu-local", ME, replace=True) == REPLACE and theirs.removed
    assert claim(Client(mine), "kvpool-cpu-local", ME) == OURS and mine.removed
    assert claim(Client(None), "kvpool-cpu-local", ME) is None


@pytest.mark.parametrize("claim", [claim_container, claim_network])
def test_an_object_the_suite_did_not_start_is_never_touched_even_with_the_flag(claim):
    users = Thing({"com.example.app": "db"})
    with pytest.raises(DeploymentError, match="not .*by this suite") as e:
        claim(Client(users), "kvpool-cpu-local", ME, replace=True)
    assert not isinstance(e.value, AnotherRunsDeployment) and not users.removed
