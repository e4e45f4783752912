"""The self-tests' tiers (tests/selftest/tiers.py): `--tier landing` (what `.ci/run` runs) or `--tier full`; and, at
the end, the time each module took and the tier's total, so the budget stays visible. The self-tests (marker `kit`)
build images and start deployments, so they run only when a tier or `-m kit` selects them: plain `pytest` starts none.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest

from .tiers import LANDING, TIERS, tiers_of

HERE = Path(__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("kvpool").addoption(
        "--tier", choices=TIERS, default=None,
        help="run the self-tests (they build images and start deployments) of this tier: landing (.ci/run, "
             "tox -e selftest; also -m kit alone) or full (tox -e selftest-full); tests/selftest/tiers.py places each. "
             "Without it, and without -m kit, no self-test runs")


def chosen_tier(config: pytest.Config) -> str | None:
    """--tier's, or landing when -m names kit (every self-test has that marker); None: no self-test runs."""
    tier = config.getoption("tier")
    if tier is None and "kit" in (config.getoption("markexpr") or ""):
        return LANDING
    return tier


def selftest_id(item: pytest.Item) -> str | None:
    """The test's id relative to tests/selftest ("test_faults.py::test_fault_is_caught[npu link down]")."""
    path = Path(item.path)
    if HERE not in path.parents:
        return None
    return f"{path.relative_to(HERE).as_posix()}::{item.name}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tier = chosen_tier(config)
    placed = {item: tiers_of(test_id) for item in items if (test_id := selftest_id(item)) is not None}
    unplaced = [selftest_id(item) for item, tiers in placed.items() if not tiers]
    if unplaced:
        raise pytest.UsageError("self-tests placed in no tier (add a row to tests/selftest/tiers.py): "
                                + ", ".join(unplaced))
    drop = {item for item, tiers in placed.items() if tier not in tiers}  # every self-test when no tier is chosen
    if tier is None:
        config.stash[_UNSELECTED] = len(drop)
    if drop:
        config.hook.pytest_deselected(items=[item for item in items if item in drop])
        items[:] = [item for item in items if item not in drop]


_UNSELECTED = pytest.StashKey[int]()


def pytest_report_collectionfinish(config: pytest.Config) -> str | None:
    n = config.stash.get(_UNSELECTED, 0)
    if n:
        return (f"{n} self-tests not selected: they build images and start deployments; run them with "
                "--tier landing (or full), as tox -e selftest does, or -m kit")
    return None


@pytest.fixture(scope="session")
def tier(request) -> str:
    return chosen_tier(request.config)


_seconds: dict[str, float] = defaultdict(float)
_started = time.monotonic()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _seconds[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    if not _seconds:
        return
    write = terminalreporter.write_line
    terminalreporter.section(f"tier {chosen_tier(config)}: time per module")
    for module, seconds in sorted(_seconds.items(), key=lambda kv: -kv[1]):
        write(f"{seconds:8.1f} s  {module}")
    write(f"{sum(_seconds.values()):8.1f} s  in tests; {time.monotonic() - _started:.1f} s since collection began")
