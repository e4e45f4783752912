"""A client command on the host (aisbench, `vllm bench serve`): its output to a log file, a deadline, and its whole
process group killed when the deadline passes or we are interrupted (a Jenkins abort signals only us)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from harness.groups import in_own_group


class ClientError(RuntimeError):
    """A load generator failed as a whole (not one request): install, start-up, its own error, its deadline."""


class Overdue(ClientError):
    pass


def run_logged(argv: list[str], log: Path, *, timeout_s: float, cwd: Path, env: dict[str, str] | None = None) -> int:
    """Run argv to its end and return its exit code; raise Overdue (after killing it) past timeout_s."""
    # stdin from /dev/null: under pytest-xdist our stdin is the worker's channel to its controller. On the way out
    # its group is SIGKILLed at once: a load generator has no teardown of its own to wait for.
    with open(log, "w") as f, in_own_group(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                           cwd=cwd, env=env) as p:
        try:
            return p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise Overdue(f"{Path(argv[0]).name} did not finish within {timeout_s:.0f} s (log {log})") from None


def run_step_command(argv: list[str], log: Path, *, cwd: Path, env: dict[str, str], request_timeout_s: float,
                     num_prompts: int, concurrency: int) -> tuple[int, float, float]:
    """One step's run of a load generator: (exit code, epoch start, epoch end). Its deadline is the request timeout
    per wave of requests, and two minutes for its own start-up and summary, which are outside the requests."""
    started = time.time()
    rc = run_logged(argv, log, timeout_s=request_timeout_s * max(1, num_prompts / concurrency) + 120, cwd=cwd,
                    env=env)
    return rc, started, time.time()


def tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
