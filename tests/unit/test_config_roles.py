"""benchmark.roles: which instance serves steps 1 and 2 (first) and which step 3 (peer), by name."""

from __future__ import annotations

from harness.config import Target, load_target

from .test_config import problems, raw, write


def test_by_default_the_first_instance_then_the_next(tmp_path):
    t = Target.model_validate(raw("cpu-local"))
    assert [x.name for x in t.roles()] == ["instance-1", "instance-2"]


def test_named_roles_are_kept_whichever_the_order(tmp_path):
    d = raw("cpu-local")
    d["benchmark"]["roles"] = {"first": "instance-2", "peer": "instance-1"}
    assert [x.name for x in load_target(write(tmp_path, d)).roles()] == ["instance-2", "instance-1"]


def test_a_role_must_name_an_instance(tmp_path):
    d = raw("cpu-local")
    d["benchmark"]["roles"] = {"peer": "instance-3"}
    found = problems(tmp_path, d)
    assert [f for f, _ in found] == ["benchmark.roles.peer"] and "'instance-3' is no instance" in found[0][1]


def test_the_peer_cannot_be_the_first_instance(tmp_path):
    d = raw("cpu-local")
    d["benchmark"]["roles"] = {"peer": "instance-1"}
    found = problems(tmp_path, d)
    assert [f for f, _ in found] == ["benchmark.roles.peer"] and "another instance" in found[0][1]
