"""Every phase a self-test waits for (a `Moment` of tests/selftest/) is logged somewhere in the code, as an event's
`phase` (harness/events.py): a renamed phase fails here, in a second, and not in a 10-minute signal self-test that
would wait for an event that never comes."""

from __future__ import annotations

import ast

from harness.config import ROOT
from harness.names import STEP_LABELS

CODE = ["harness", "kit", "commands", "fixtures", "tests/acceptance", "tests/resilience", "tests/endurance",
        "tests/pool_cost"]


def _text(node: ast.AST) -> list[str]:
    """The phase names an expression can be: a string, or either string of `a if c else b`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _text(node.body) + _text(node.orelse)
    return []


def logged_phases(source: str) -> set[str]:
    """The phases a module logs: `extra={"phase": NAME, ...}`, a `phase=NAME` argument (kit.build.run_streamed), and
    the NAME of a timed phase, `phases.phase(NAME)` or `phases.begin(NAME)` (fixtures/deployment.py's Phases logs
    it at its begin and end)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "phase":
                    found.update(_text(value))
        elif isinstance(node, ast.Call):
            found.update(n for k in node.keywords if k.arg == "phase" for n in _text(k.value))
            if isinstance(node.func, ast.Attribute) and node.func.attr in ("phase", "begin") and node.args:
                found.update(_text(node.args[0]))
    return found


def awaited_phases(source: str) -> set[str]:
    """The phases of the `Moment(...)`s a self-test module names."""
    return {name for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Moment"
            and node.args for name in _text(node.args[0])}


def _sources(*folders: str) -> list[str]:
    return [p.read_text() for f in folders for p in sorted((ROOT / f).rglob("*.py"))]


def test_every_phase_a_self_test_waits_for_is_logged_by_the_code():
    awaited = set().union(*map(awaited_phases, _sources("tests/selftest")))
    # The ones the signal and --attach self-tests interrupt at, and what they then look for: the list is the real one.
    assert {"debootstrap stage", "wheel download", "docker build step", "container", "instances launched",
            "step 1 cold", "master", "interrupted", "teardown", "container removed", "process stopped"} <= awaited
    # Stage 5 times each step as the phase its label names: phases.phase(label) with label = STEP_LABELS[step].
    logged = set().union(*map(logged_phases, _sources(*CODE))) | set(STEP_LABELS.values())
    assert awaited - logged == set()


def test_a_phase_is_found_only_where_it_is_logged_as_one():
    assert logged_phases('log.info("x", extra={"phase": "master ready", "seconds": 1.0})') == {"master ready"}
    assert logged_phases('run_streamed(argv, "docker build", phase="docker build step")') == {"docker build step"}
    assert logged_phases('with self.phases.phase("container"):\n    pass\nphases.begin("instances ready")') == {
        "container", "instances ready"}
    assert logged_phases('log.info("x", extra={"phase": "container attached" if a else "container started"})') == {
        "container attached", "container started"}
    # A message, another key, or a name made at run time is no phase of its own: a renamed phase is not found.
    assert logged_phases('log.info("master ready", extra={"process_name": "master"})\nphases.phase(label)') == set()
    assert awaited_phases('MOMENTS = {"a": Moment("teardown", at="end"), "b": runner.Moment("master")}') == {
        "teardown", "master"}
