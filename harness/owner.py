"""Whose deployment a container or network is. Each run labels what it starts with its owner (run id, start time,
user, host, pid, whether it was kept), and decides what to do with one that already holds the target's name: this
run's own is removed, another run's is left alone unless --replace-deployment says otherwise, and anything the suite
did not start is never touched. No Docker here: harness/runtime.py acts on the decision."""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone

LABEL = "kvpool-acceptance"  # its value says what the object is: "deployment" (a container) or "network"
REPLACE_FLAG = "--replace-deployment"

# What a run does with an object that already holds its name.
FOREIGN = "foreign"  # not started by the suite: never touched, the run stops
OURS = "ours"  # this run's own (an interrupted start): removed
REPLACE = "replace"  # another run's, and REPLACE_FLAG was given: removed
REFUSE = "refuse"  # another run's: left alone, the run stops and says whose it is


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no USER/LOGNAME and no passwd entry (an arbitrary uid): KeyError or OSError
        return f"uid {os.getuid()}"


@dataclass(frozen=True)
class Owner:
    run: str  # the run's id: its folder under reports/
    started: str  # UTC, ISO 8601
    user: str
    host: str
    pid: int
    kept: bool  # started with --keep-deployment: left running on purpose

    @classmethod
    def this_process(cls, run: str, kept: bool = False) -> Owner:
        return cls(run, datetime.now(timezone.utc).isoformat(timespec="seconds"), _user(), socket.gethostname(),
                   os.getpid(), kept)

    def labels(self, kind: str) -> dict[str, str]:
        return {LABEL: kind, f"{LABEL}.run": self.run, f"{LABEL}.started": self.started, f"{LABEL}.user": self.user,
                f"{LABEL}.host": self.host, f"{LABEL}.pid": str(self.pid), f"{LABEL}.kept": str(self.kept).lower()}

    def owns(self, labels: dict[str, str]) -> bool:
        """Whether this run made the object: same run id, host and process (two runs may share a run id)."""
        mine = self.labels("")
        return all(labels.get(f"{LABEL}.{k}") == mine[f"{LABEL}.{k}"] for k in ("run", "host", "pid"))


def decide(labels: dict[str, str] | None, kind: str, me: Owner, replace: bool) -> str:
    """FOREIGN, OURS, REPLACE or REFUSE for an object of `kind` ("deployment" or "network") holding this run's name."""
    labels = labels or {}
    if labels.get(LABEL) != kind:
        return FOREIGN
    if me.owns(labels):
        return OURS
    return REPLACE if replace else REFUSE


def whose(labels: dict[str, str]) -> str:
    """The owner as its labels tell it; a field an older version of the suite did not write reads "unknown"."""
    def get(key: str) -> str:
        return labels.get(f"{LABEL}.{key}") or "unknown"

    if labels.get(f"{LABEL}.kept") == "true":
        state = "kept on purpose with --keep-deployment"
    else:
        state = "not kept: its run is still running, or was killed"
    return (f"run {get('run')}, started {get('started')} by {get('user')} on host {get('host')} (pid {get('pid')}), "
            f"{state}")


def refusal(what: str, name: str, labels: dict[str, str], status: str, by_hand: str, also: str = "") -> str:
    """Why the run stops: whose the object is, and how to remove it."""
    state = f" ({status})" if status else ""
    return (f"{what} {name!r}{state} belongs to another run of this suite: {whose(labels)}. It is left alone. "
            f"To remove it and start this run's own, add {REPLACE_FLAG}, or remove it by hand: {by_hand}."
            + (f" {also}" if also else ""))
