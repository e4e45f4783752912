"""A pytest plugin for tests/unit/test_config_doc.py: while the traps' own unit tests run, it records the field of every
problem each trap of harness/traps.py returns, and writes {trap: [field, ...]} as JSON to $KVPOOL_TRAP_FIELDS_OUT."""

from __future__ import annotations

import functools
import json
import os

from harness import traps

_seen: dict[str, set[str]] = {}


def _recording(real):
    @functools.wraps(real)
    def trap(*args, **kwargs):
        problems = real(*args, **kwargs)
        _seen.setdefault(real.__name__, set()).update(field for field, _ in problems)
        return problems
    return trap


def pytest_configure(config):
    for f in list(traps.TRAPS):
        setattr(traps, f.__name__, _recording(f))
    traps.TRAPS[:] = [getattr(traps, f.__name__) for f in traps.TRAPS]


def pytest_unconfigure(config):
    with open(os.environ["KVPOOL_TRAP_FIELDS_OUT"], "w") as out:
        json.dump({k: sorted(v) for k, v in _seen.items()}, out, indent=1, sort_keys=True)
