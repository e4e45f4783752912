"""A client command on the host (aisbench, `vllm bench serve`): its output to a log file, a deadline, and its whole
process group killed when the deadline passes or we are interrupted (a Jenkins abort signals only us)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


class Overdue(RuntimeError):
    pass


def run_logged(argv: list[str], log: Path, *, timeout_s: float, cwd: Path, env: dict[str, str] | None = None) -> int:
    """Run argv to its end and return its exit code; raise Overdue (after killing it) past timeout_s."""
    with open(log, "w") as f:
        # stdin from /dev/null: under pytest-xdist our stdin is the worker's channel to its controller.
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                             start_new_session=True)
        try:
            return p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise Overdue(f"{Path(argv[0]).name} did not finish within {timeout_s:.0f} s (log {log})") from None
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
