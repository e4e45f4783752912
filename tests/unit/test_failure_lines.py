"""harness.failure_lines on real text: every transfer pattern matches a real line (none is dead), every start-up
cause is read from a real log, and the healthy logs of every stack we hold match nothing.

The texts: tests/unit/recordings/failure-lines/ (issue trackers, each block under its issue), the connectors'
format strings in test_seed_logs.py (sources), and Mooncake 0.3.13's client recorded here (recordings/README.md).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from harness import serving
from harness.config import load_target
from harness.failure_lines import STARTUP_CAUSES, TRANSFER_FAILURES, startup_failures, startup_verdict
from harness.runtime import DeploymentError

from .test_ascend_store_logs import FAILURE_LINES as ASCEND_STORE_0_23_FAILURES
from .test_seed_logs import VLLM_0_32_ERRORS, VLLM_ASCEND_0_11_ERRORS, recorded

REC = Path(__file__).parent / "recordings"
MC13 = REC / "mooncake-0.3.13.post1"
UNREACHABLE = (MC13 / "client-master-unreachable.log").read_text()
TOO_LARGE = (MC13 / "client-segment-too-large.log").read_text()
FAILURES = recorded("failures.log")
REAL_FAILURES = [*FAILURES, *VLLM_ASCEND_0_11_ERRORS, *VLLM_0_32_ERRORS,
                 *(REC / "vllm-0.32.0" / "after-peer-killed-instance-2.log").read_text().splitlines(),
                 *ASCEND_STORE_0_23_FAILURES]  # formatted from vllm-ascend 0.23's source until a run records them
HEALTHY = {
    "vllm-ascend 0.11 on cpu-local-seed": "".join(p.read_text() for p in sorted((REC / "vllm-0.11.0").glob("*.log"))),
    "vLLM 0.32 on cpu-local": (REC / "vllm-0.32.0" / "instance-1.log").read_text(),
    "Mooncake 0.3.7.post2 client": (REC / "mooncake-0.3.7.post2" / "client.log").read_text(),
    "Mooncake 0.3.13.post1 client": (MC13 / "client.log").read_text(),
    "vllm-ascend + Mooncake on NPUs (issue logs)": "\n".join(recorded("healthy.log")),
}


@pytest.mark.parametrize("pattern", TRANSFER_FAILURES)
def test_every_transfer_pattern_matches_a_real_line(pattern):
    assert any(re.search(pattern, line) for line in REAL_FAILURES), f"no real line for {pattern!r}"


@pytest.mark.parametrize(("cause", "lines"), [
    ("its Mooncake client could not be created", [UNREACHABLE.splitlines()[-2], FAILURES[-9]]),
    ("its pool segment could not be allocated", [TOO_LARGE.splitlines()[-3]]),
    ("its pool segment could not be mounted", [line for line in FAILURES if "ount" in line and "egment" in line]),
    ("its pool connector failed to initialise", [line for line in FAILURES if "Initialize mooncake failed" in line]),
    ("its calls to the Mooncake master failing",
     [x for x in UNREACHABLE.splitlines() if "Client not available" in x or ", retry " in x]
     + [x for x in FAILURES if "RPC call failed" in x]
     # Mooncake v0.3.7.post2 client.cpp:200's format string behind glog's prefix (no real log of it was found)
     + ["E1203 10:00:00.000000  4711 client.cpp:200] Failed to connect to master"]),
], ids=lambda v: v if isinstance(v, str) else str(len(v)))
def test_each_startup_cause_is_read_from_real_lines(cause, lines):
    assert lines and cause in {c.cause for c in STARTUP_CAUSES}
    for line in lines:
        assert [f.cause for f in startup_failures(line)] == [cause], line


def test_a_master_that_does_not_listen_reads_as_the_client_giving_up_after_the_retries():
    found = startup_failures(UNREACHABLE)
    assert [(f.cause, f.final) for f in found] == [("its calls to the Mooncake master failing", False),
                                                   ("its Mooncake client could not be created", True)]
    assert found[0].line.endswith("master_client.cpp:361] Client not available")  # its first try
    verdict = startup_verdict(found)
    assert verdict.startswith("its Mooncake client could not be created (log line 122: 'E1203 ")
    assert "Failed to create client after 20 retries'); before or beside it: its calls to the Mooncake" in verdict


CROSS = [x for x in (REC / "cross-version.txt").read_text().splitlines() if x[:1] in "EW" and x[1:2].isdigit()]


def test_a_client_and_master_of_two_versions_read_as_calls_failing_then_no_client():
    # Both directions of recordings/cross-version.txt: 0.3.13's client gives up after its retries, 0.3.7's at once.
    newer, older = CROSS[:3], CROSS[3:]
    for lines in (newer, older):
        found = startup_failures("\n".join(lines))
        assert [(f.cause, f.final) for f in found] == [("its calls to the Mooncake master failing", False),
                                                       ("its Mooncake client could not be created", True)], lines
        assert "failed to deserialize rpc return value" in found[0].line
    assert older[-1].endswith("pybind_client.cpp:185] Failed to create client")


def test_retries_alone_are_not_final():
    # The first 20 lines: the client is still trying, and a master that answers later lets it through.
    found = startup_failures("\n".join(UNREACHABLE.splitlines()[:20]))
    assert found and not any(f.final for f in found)


def test_the_segment_mount_failure_of_vllm_ascend_4269_names_the_mount_first():
    block = FAILURES[FAILURES.index(next(x for x in FAILURES if "master_client.cpp:146" in x)):][:4]
    verdict = startup_verdict(startup_failures("\n".join(block)))
    assert verdict.startswith("its pool segment could not be mounted (log line 2: 'E20251112 11:16:11.129853")
    assert "its calls to the Mooncake master failing (log line 1" in verdict
    assert "its pool connector failed to initialise (log line 4" in verdict


@pytest.mark.parametrize("stack", HEALTHY)
def test_healthy_logs_show_no_startup_failure(stack):
    text = HEALTHY[stack]
    assert text.strip() and startup_failures(text) == []


def test_the_healthy_0_3_13_client_error_line_is_not_a_failure():
    # A healthy 0.3.13 client prints an E-line at every start: the negative control has an error line in it.
    assert "E1201 10:24:53.737443 17292 transfer_metadata.cpp:1098] Local segment descriptor not found" in HEALTHY[
        "Mooncake 0.3.13.post1 client"]


# --- stage 4's wait, on these logs: the instance's process and /health are stand-ins, the log text is real ---


class StandInProcess:
    """An instance's process whose log grows by one recorded line per look; or one that has exited already, its
    whole log written (it died between two looks)."""

    def __init__(self, lines: list[str], exited: bool = False, written: int = 0):
        self.lines, self.exited = lines, exited
        self.shown = len(lines) if exited else written
        self.name, self.pid = "instance-2", 4711

    def log(self) -> str:
        self.shown = min(self.shown + 1, len(self.lines))
        return "\n".join(self.lines[:self.shown]) + "\n"

    def alive(self) -> bool:
        return not self.exited

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.lines[:self.shown][-lines:])

    def last_line(self) -> str:
        return self.lines[max(self.shown - 1, 0)]


def waiting(monkeypatch, lines: list[str], *, exited: bool = False, healthy_after: int | None = None,
            timeout_s: float = 60, started_s_ago: float = 0, read_every_s: float = 0) -> serving.RunningInstance:
    proc = StandInProcess(lines, exited, written=len(lines) if started_s_ago else 0)
    monkeypatch.setattr(serving, "STARTUP_READ_EVERY_S", read_every_s)
    monkeypatch.setattr(serving, "healthy", lambda inst: healthy_after is not None and proc.shown >= healthy_after)
    monkeypatch.setattr("harness.waiting.time.sleep", lambda s: None)  # one look per check, no real waiting
    spec = load_target("cpu-local").instances[1].model_copy(update={"ready_timeout_s": timeout_s})
    return serving.RunningInstance(spec, proc, started_at=time.monotonic() - started_s_ago)  # type: ignore[arg-type]


def test_stage_4_fails_at_the_line_where_the_client_gave_up(monkeypatch):
    inst = waiting(monkeypatch, UNREACHABLE.splitlines()[:-1])  # alive, ready_timeout_s 60 s away
    start = time.monotonic()
    with pytest.raises(DeploymentError) as e:
        serving.wait_ready([inst])
    assert time.monotonic() - start < 30
    assert str(e.value).startswith("instance-2 cannot join the pool (")
    assert "its Mooncake client could not be created (log line 122" in str(e.value)


def test_an_instance_that_exits_names_its_startup_failure(monkeypatch):
    inst = waiting(monkeypatch, [*HEALTHY["vLLM 0.32 on cpu-local"].splitlines()[:5], *TOO_LARGE.splitlines()],
                   exited=True)
    with pytest.raises(DeploymentError, match=r"instance-2 exited before it became healthy \(\d+ s after start\): "
                                              r"its pool segment could not be allocated \(log line 21: "):
        serving.wait_ready([inst])


def test_retries_then_ready_is_ready(monkeypatch):
    # A master that answers after a few tries: not a failure (the negative control of the first test).
    lines = [*UNREACHABLE.splitlines()[:20], *HEALTHY["vLLM 0.32 on cpu-local"].splitlines()]
    inst = waiting(monkeypatch, lines, healthy_after=len(lines))
    assert set(serving.wait_ready([inst])) == {"instance-2"}


def test_a_timeout_names_the_retries_it_saw(monkeypatch):
    inst = waiting(monkeypatch, UNREACHABLE.splitlines()[:20], timeout_s=0.5, started_s_ago=1)  # its timeout is past
    with pytest.raises(DeploymentError, match=r"not healthy on .* after 0 s \(instances\[\]\.ready_timeout_s\): its "
                                              r"calls to the Mooncake master failing \(log line 6: "):
        serving.wait_ready([inst])


def test_a_timeout_reads_the_log_as_it_is_then(monkeypatch):
    # The periodic read is not due when the timeout comes (read_every_s 3600): the verdict still reads the log then.
    lines = UNREACHABLE.splitlines()[:20]
    inst = waiting(monkeypatch, lines, read_every_s=3600)
    looks = []

    def healthy(_):
        looks.append(1)
        if len(looks) == 2:  # between the first look and the second: the retries are written and the timeout passes
            inst.process.shown = len(lines)
            inst.started_at -= 120
        return False

    monkeypatch.setattr(serving, "healthy", healthy)
    with pytest.raises(DeploymentError, match=r"after 60 s \(instances\[\]\.ready_timeout_s\): its calls to the "
                                              r"Mooncake master failing \(log line 6: "):
        serving.wait_ready([inst])
