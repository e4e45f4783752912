"""The self-tests' tiers (tests/selftest/tiers.py): `--tier landing` (the default, what `.ci/run` runs) or
`--tier full`; and, at the end, the time each module took and the tier's total, so the budget stays visible."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest

from .tiers import LANDING, TIERS, tiers_of

HERE = Path(__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("kvpool").addoption(
        "--tier", choices=TIERS, default=LANDING,
        help="which self-tests run: landing (the default; .ci/run, tox -e selftest) or full (tox -e selftest-full); "
             "tests/selftest/tiers.py places each")


def selftest_id(item: pytest.Item) -> str | None:
    """The test's id relative to tests/selftest ("test_faults.py::test_fault_is_caught[npu link down]")."""
    path = Path(item.path)
    if HERE not in path.parents:
        return None
    return f"{path.relative_to(HERE).as_posix()}::{item.name}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tier = config.getoption("tier")
    placed = {item: tiers_of(test_id) for item in items if (test_id := selftest_id(item)) is not None}
    unplaced = [selftest_id(item) for item, tiers in placed.items() if not tiers]
    if unplaced:
        raise pytest.UsageError("self-tests placed in no tier (add a row to tests/selftest/tiers.py): "
                                + ", ".join(unplaced))
    drop = {item for item, tiers in placed.items() if tier not in tiers}
    if drop:
        config.hook.pytest_deselected(items=[item for item in items if item in drop])
        items[:] = [item for item in items if item not in drop]


@pytest.fixture(scope="session")
def tier(request) -> str:
    return request.config.getoption("tier")


_seconds: dict[str, float] = defaultdict(float)
_started = time.monotonic()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _seconds[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    if not _seconds:
        return
    write = terminalreporter.write_line
    terminalreporter.section(f"tier {config.getoption('tier')}: time per module")
    for module, seconds in sorted(_seconds.items(), key=lambda kv: -kv[1]):
        write(f"{seconds:8.1f} s  {module}")
    write(f"{sum(_seconds.values()):8.1f} s  in tests; {time.monotonic() - _started:.1f} s since collection began")
