"""Which tier runs each self-test: the landing tier (`.ci/run`, `tox -e selftest`: within its budget on a 2-core
machine) or the full tier (`tox -e selftest-full`: everything at full size).

One table, read by tests/selftest/conftest.py to select a tier's tests and by tests/unit/test_tiers.py to prove
that every negative control runs in at least one tier. A self-test that matches no row runs in no tier: the
conftest refuses to run such a session, so a new self-test must be placed here.
"""

from __future__ import annotations

import re

LANDING, FULL = "landing", "full"
TIERS = (LANDING, FULL)
BOTH = frozenset(TIERS)

# (pattern of a test id relative to tests/selftest, `*` for any text, tiers, why). The first row that matches decides.
PLACES: list[tuple[str, frozenset[str], str]] = [
    ("test_acceptance_run.py::test_*_with_xdist_*", frozenset({FULL}),
     "a second whole deployment and aisbench's 2 GB install; the serial run's verdicts stay in landing"),
    ("test_acceptance_run.py::*", BOTH, "the suite green, stage by stage, nothing left"),
    # Landing: setup, the preflight and the parsers' unit tests on the emulated aarch64 host; full: every unit test.
    ("test_arm64_host.py::*", BOTH, "the Atlas steps on an emulated aarch64 host with Python 3.9"),
    ("test_attach.py::*", BOTH, "--attach: every process stopped by its owner"),
    # The opt-in endurance stage's controls (tox -e endurance): a deployment and 3 min of traffic each.
    ("test_endurance_run.py::*", frozenset({FULL}), "the endurance stage's gates red for their own causes"),
    # The opt-in pool-cost stage's controls (tox -e pool-cost): two bring-ups each.
    ("test_pool_cost_run.py::*", frozenset({FULL}), "the pool-cost stage's gate red for its own causes"),
    # Landing runs a stage-5 row on a handful of prompts (tests/selftest/test_faults.py SMALL), full on the dataset.
    ("test_faults.py::*", BOTH, "each fault row's attribution"),
    ("test_hostile.py::*", BOTH, "hostile values are data"),
    ("test_kit.py::*", BOTH, "the kit builds and runs"),
    ("test_report_tox.py::*", BOTH, "the report's npm install with and without the CA"),
    ("test_resilience_run.py::test_each_row_fails_*", frozenset({FULL}),
     "a second resilience deployment (each bound broken at once)"),
    # The opt-in stage (tox -e resilience): its green run and its broken bounds in the full tier, which makes room in
    # landing for the emulated Atlas host (docs/development.md, "The landing check").
    ("test_resilience_run.py::*", frozenset({FULL}), "the resilience stage green for the right reasons"),
    ("test_signals.py::test_signal_leaves_nothing_behind[*-2]", frozenset({FULL}),
     "the repeat of each signal x moment: a teardown race shows on a repeat"),
    ("test_signals.py::*", BOTH, "each signal at each moment once; a crash inside a fixture"),
    ("test_two_nodes.py::*", BOTH, "the two-node run green"),
    ("test_versions.py::*", frozenset({FULL}),
     "the seed's versions: two images of ~8 GB built on first use, and two whole runs"),
]


def tiers_of(test_id: str) -> frozenset[str]:
    """The tiers that run `test_id` ("test_faults.py::test_fault_is_caught[npu link down]"); none if no row
    matches."""
    for pattern, tiers, _ in PLACES:
        if re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), test_id):
            return tiers
    return frozenset()
