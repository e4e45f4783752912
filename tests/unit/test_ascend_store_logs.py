"""vllm-ascend 0.23's AscendStoreConnector (and vLLM 0.23's scheduler) in the logs: its per-request hit lines parsed and
summed as step evidence, its transfer-failure and start-up failure lines caught, its healthy lines matching nothing.

The lines: tests/unit/recordings/vllm-ascend-0.23.0.post1/formatted-from-source.log, NOT recorded from a run: formatted
as each logger call of the source formats them (the call cited above each block), to be replaced by a real run's
lines. The 0.11 lines these are compared with are real (recordings/vllm-0.11.0/, a cpu-local-seed run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import ascend_store, connector_log
from harness.config import load_target
from harness.evidence import read, served_by
from harness.failure_lines import TRANSFER_FAILURES, startup_failures, startup_verdict, transfer_failures
from harness.metrics import Metrics

REC = Path(__file__).parent / "recordings"
FORMATTED = REC / "vllm-ascend-0.23.0.post1" / "formatted-from-source.log"


def blocks() -> dict[str, list[str]]:
    """The file's blocks by name ("# --- NAME ---"), their log lines without the comments."""
    out: dict[str, list[str]] = {}
    name = None
    for line in FORMATTED.read_text().splitlines():
        m = re.fullmatch(r"# --- (.+) ---", line)
        if m:
            name = m[1]
            out[name] = []
        elif name and line and not line.startswith("#"):
            out[name].append(line)
    return out


BLOCKS = blocks()
FAILURE_LINES = [x for x in BLOCKS["transfer failures"] if "Traceback" not in x]
HEALTHY = [x for name in ("step 1: cold", "step 3: cross-instance hit, no local prefix cache (atlas-800t-a2-kvpool)",
                          "step 2: local hit with the local prefix cache on", "a request looked up twice",
                          "deprecated name") for x in BLOCKS[name]]
NONE = Metrics()
KVPOOL = load_target("atlas-800t-a2-kvpool", check_host=False)
SEED = load_target("cpu-local-seed", check_host=False)


def test_the_file_has_every_block():
    assert all(BLOCKS.values()) and len(BLOCKS) == 7


# --- hit lines ---


def test_a_cross_instance_hit_is_one_hit_line_and_a_load_spec_line_per_request():
    lines = BLOCKS["step 3: cross-instance hit, no local prefix cache (atlas-800t-a2-kvpool)"]
    assert connector_log.hits("\n".join(lines)) == [
        {"request": "cmpl-8f2c41d07b6e4a39a1d5e0c3b7f91a26-0", "total": 1024, "hit": 1023, "need_to_load": 1023},
        {"request": "cmpl-2d9e7a1c5f3b48e6b0c4d8a2e6f1c3b5-0", "total": 1024, "hit": 1023, "need_to_load": 1023},
    ]
    # The load-spec lines are not hit lines: alone they parse to nothing.
    assert connector_log.hits("\n".join(x for x in lines if "load spec created" in x)) == []


def test_a_local_hit_loads_only_what_the_local_cache_lacks():
    [h] = connector_log.hits("\n".join(BLOCKS["step 2: local hit with the local prefix cache on"]))
    assert (h["hit"], h["need_to_load"]) == (1023, 127)


def test_a_request_looked_up_twice_is_counted_once():
    lines = connector_log.hits("\n".join(BLOCKS["a request looked up twice"]))
    assert len(lines) == 2 and connector_log.loaded_tokens(lines) == 1023
    r = read("connector_log", NONE, NONE, [], "\n".join(BLOCKS["a request looked up twice"]), logs_every_lookup=False)
    assert r.pool == 1023 and r.detail == "2 per-request lines of 1 requests"


def test_the_0_11_lines_are_summed_as_before():
    # Real lines of vllm-ascend 0.11 (cpu-local-seed): a cold request (0), a local hit (127), a pool hit (1023).
    log = "".join(p.read_text() for p in sorted((REC / "vllm-0.11.0").glob("instance-*.log")))
    lines = connector_log.hits(log)
    assert [h["need_to_load"] for h in lines][:3] == [0, 127, 1023]
    assert connector_log.loaded_tokens(lines) == sum(h["need_to_load"] for h in lines)  # one line per request there


# --- the evidence: what no line means, by version ---


def test_on_0_23_a_step_without_a_line_loaded_nothing():
    step1 = "\n".join(BLOCKS["step 1: cold"])
    r = read("connector_log", NONE, NONE, [], step1, logs_every_lookup=False)
    assert r.present and r.pool == 0 and "only when the pool hits" in r.detail
    assert served_by([r], 0) == "neither"


def test_on_0_11_a_step_without_a_line_has_no_evidence():
    # The negative control: 0.11 logs every lookup, so silence means the connector never looked.
    r = read("connector_log", NONE, NONE, [], "\n".join(BLOCKS["step 1: cold"]), logs_every_lookup=True)
    assert not r.present and "no per-request" in r.detail


def test_on_0_23_a_hit_step_is_served_by_the_pool():
    step3 = "\n".join(BLOCKS["step 3: cross-instance hit, no local prefix cache (atlas-800t-a2-kvpool)"])
    r = read("connector_log", NONE, NONE, [], step3, logs_every_lookup=False)
    assert r.present and r.pool == 2 * 1023 and served_by([r], 0) == "pool"


def test_which_connectors_log_every_lookup():
    assert not any(connector_log.logs_every_lookup(KVPOOL, x) for x in KVPOOL.instances)
    assert all(connector_log.logs_every_lookup(SEED, x) for x in SEED.instances)  # 0.11's, the same name's
    cpu = load_target("cpu-local", check_host=False)
    assert all(connector_log.logs_every_lookup(cpu, x) for x in cpu.instances)  # vLLM's own


def test_the_old_name_on_a_0_23_stack_is_the_0_23_connector():
    data = KVPOOL.model_dump()
    for x in data["instances"]:
        x["kv_transfer_config"]["kv_connector"] = ascend_store.OLD_NAME
    t = type(KVPOOL).model_validate(data)
    assert not any(connector_log.logs_every_lookup(t, x) for x in t.instances)


# --- failure lines ---


@pytest.mark.parametrize("log_line", FAILURE_LINES)
def test_every_0_23_transfer_failure_line_is_caught(log_line):
    assert transfer_failures(log_line, TRANSFER_FAILURES) == [log_line]


def test_healthy_0_23_lines_are_no_failure():
    text = "\n".join(HEALTHY)
    assert transfer_failures(text, TRANSFER_FAILURES) == [] and startup_failures(text) == []


@pytest.mark.parametrize(("needle", "cause"), [
    ("Unsupported KV pool backend", "its connector has no such KV pool backend (kv_connector_extra_config.backend)"),
    ("does not support protocol", "its connector's Mooncake backend refuses mooncake.json's protocol"),
    ("MOONCAKE_CONFIG_PATH", "its connector was given no mooncake.json (env MOONCAKE_CONFIG_PATH)"),
])
def test_each_0_23_startup_refusal_is_final_and_named(needle, cause):
    [log_line] = [x for x in BLOCKS["start-up failures"] if needle in x]
    [found] = startup_failures(log_line)
    assert (found.cause, found.final) == (cause, True)
    assert startup_verdict([found]).startswith(f"{cause} (log line 1: ")
    assert transfer_failures(log_line, TRANSFER_FAILURES) == []  # a start-up matter, not a transfer's


def test_the_deprecation_text_is_the_connectors_own():
    [log_line] = BLOCKS["deprecated name"]
    assert log_line.endswith(ascend_store.DEPRECATION)
