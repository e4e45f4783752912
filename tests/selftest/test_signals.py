"""Teardown under signals: Ctrl-C (SIGINT) or a Jenkins abort (SIGTERM) at a given moment of the run leaves
no container, process or port behind, within 30 s; and a crash inside a fixture still tears down what was
started before it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from harness.config import ROOT

from .runner import leftovers, run_suite

pytestmark = pytest.mark.kit

# Lines the suite prints at each moment (fixtures/deployment.py); the signal goes right after one shows.
MOMENTS = {
    "container start": "[deployment] container: starting",
    "instance start": "waiting for /health",
    "benchmark": "[deployment] step 1 cold: starting",
}
TEARDOWN_LIMIT_S = 30


def interrupt_at(moment: str, signum: int, timeout: float = 600) -> tuple[float, str]:
    """Run the suite, send `signum` when `moment` shows, and return how long it took to exit after that."""
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-m", "acceptance",
                             "-p", "no:cacheprovider", "-s", "tests/acceptance"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if MOMENTS[moment] in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert seen.wait(timeout), f"the run never reached {moment!r}:\n{''.join(lines[-30:])}"
        time.sleep(0.5)  # inside the moment, not at its first line
        proc.send_signal(signum)
        sent = time.monotonic()
        proc.wait(timeout=TEARDOWN_LIMIT_S + 30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        reader.join(timeout=5)
    return took, "".join(lines)


@pytest.mark.parametrize("attempt", [1, 2, 3])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_signal_leaves_nothing_behind(moment, signum, attempt):
    took, output = interrupt_at(moment, signum)
    print(f"{moment}, {signal.Signals(signum).name} #{attempt}: exited {took:.1f} s after the signal")
    assert took < TEARDOWN_LIMIT_S, f"teardown took {took:.0f} s:\n{output[-3000:]}"
    assert leftovers() == [], output[-3000:]


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
    assert "mooncake master stopped" in run.output and "removed" in run.output
    assert leftovers() == []
