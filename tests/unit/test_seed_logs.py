"""Log lines of the seed's connector (vllm-ascend 0.11 MooncakeConnectorStoreV1) and of vLLM 0.32's
MooncakeStoreConnector: every transfer-failure message is caught by the targets' patterns, the normal
per-request lines are not, and those lines parse into hits (harness.connector_log).

The messages are the connectors' own format strings (vllm_ascend/distributed/mooncake/ in vllm-ascend
0.11.0; vLLM 0.32's Mooncake store worker), filled with plausible values behind vLLM's log prefix."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import load_target
from harness.connector_log import hits
from harness.failure_lines import transfer_failures

KEY = "/model/Qwen2.5-72B-Instruct/@4@0@9c1f5b3e2a7d4c60"  # {model path}@{world size}@{rank}@{chunk hash}
KEYS = f"['{KEY}', '/model/Qwen2.5-72B-Instruct/@4@0@1b2e7f0c99a34d18']"


def line(level: str, where: str, message: str, process: str = "Worker pid=4711") -> str:
    return f"({process}) {level} 12-01 10:24:44 [{where}] {message}"


VLLM_ASCEND_0_11_ERRORS = [
    f"Failed to get key {KEYS},res:[-707, 0]",
    f"Failed to get key {KEYS}. Transfer timed out after 10000 ms",
    f"Failed to put key {KEYS},res:[-200]",
    f"Failed to put key {KEYS},error:NO_AVAILABLE_HANDLE",
    f"Failed to get key: [{KEY}] .",
    f"Failed to put key {KEY}.",
    "Initialize mooncake failed.",
    "Remote connection failed in contains: [Errno 111] Connection refused",
    "Error in KVCacheTransferThread: 'NoneType' object has no attribute 'batch_get_into'",
    "Mooncake memory registration failed. Error is: register memory failed, ret -1",
    "TransferEngine initialization failed with ret_value: -1",
    "Layerwise get failed",
]

VLLM_0_32_ERRORS = [
    "Failed to put key qwen2-tiny@tp_rank:0@pcp0@dcp0@pp_rank:0@0@7be2c1, error: -800",
    "batch_put failed: 2/7 keys failed (codes=[-800, -800], batch_bytes=917504), first_key=qwen2-tiny@tp_rank:0@7be2c1",
    "Failed to get 3 Mooncake keys from sub-batch (batch_keys=7, first_failures=[(0, -704)])",
    "Failed to get Mooncake sub-batch 2, error: timeout",
    "Remote connection failed in lookup: timeout",
    "Async Mooncake lookup failed for cmpl-1-0: RuntimeError('master unreachable')",
    "register_buffer failed for addr 0x7f3a2c000000 len 268435456: -1",
    "Initialize MooncakeDistributedStore failed.",
    # store/worker.py:709 and :1216 of the cpu-local image's vLLM 0.32.0 (warnings, with the job undone)
    "Boundary-state put failed for request cmpl-1-0: 2/9 keys failed (codes={-800})",
    "Skipping Mooncake load for request cmpl-1-0 because key qwen2-tiny@tp_rank:0@7be2c1 requires 4194304 staging "
    "bytes, exceeding budget 1048576",
]

NORMAL = [
    line("INFO", "mooncake_connector.py:312",
         "Reqid: cmpl-1-0, Total tokens 1024, mooncake hit tokens: 896, need to load: 896",
         process="EngineCore_DP0 pid=4702"),
    line("INFO", "mooncake_engine.py:201",
         "Storing KV cache for 896 out of 1024 tokens (skip_leading_tokens=0) for request cmpl-1"),
    line("INFO", "mooncake_connector.py:312", "Reqid: cmpl-2-0, Total tokens 1024, mooncake hit tokens: 0, "
                                               "need to load: 0", process="EngineCore_DP0 pid=4702"),
    'INFO:     90.90.135.188:51234 - "POST /v1/completions HTTP/1.1" 200 OK',
]


@pytest.fixture(scope="module")
def atlas_patterns() -> list[str]:
    return load_target("atlas-800t-a2").mooncake.transfer_failure_patterns


@pytest.mark.parametrize("message", VLLM_ASCEND_0_11_ERRORS)
def test_every_vllm_ascend_0_11_failure_is_caught(atlas_patterns, message):
    log_line = line("ERROR", "mooncake_store.py:123", message)
    assert transfer_failures(log_line, atlas_patterns) == [log_line]


@pytest.mark.parametrize("message", VLLM_0_32_ERRORS)
def test_every_vllm_0_32_failure_is_caught(message):
    patterns = load_target("cpu-local").mooncake.transfer_failure_patterns
    log_line = line("ERROR", "worker.py:956", message)
    assert transfer_failures(log_line, patterns) == [log_line]


def test_normal_lines_are_not_failures(atlas_patterns):
    assert transfer_failures("\n".join(NORMAL), atlas_patterns) == []


def test_failures_among_normal_lines_are_picked_out(atlas_patterns):
    failures = [line("ERROR", "mooncake_store.py:123", m) for m in VLLM_ASCEND_0_11_ERRORS[:3]]
    log = "\n".join([NORMAL[0], failures[0], NORMAL[1], failures[1], failures[2], NORMAL[3]])
    assert transfer_failures(log, atlas_patterns) == failures


def test_hit_lines_of_both_connectors_parse():
    log = "\n".join([
        *NORMAL,
        line("INFO", "mooncake_store_connector.py:88",
             "Reqid: cmpl-3a9f-0, Total tokens 1000, kvpool hit tokens: 896, need to load: 0",
             process="EngineCore pid=77"),
    ])
    assert hits(log) == [
        {"request": "cmpl-1-0", "total": 1024, "hit": 896, "need_to_load": 896},
        {"request": "cmpl-2-0", "total": 1024, "hit": 0, "need_to_load": 0},
        {"request": "cmpl-3a9f-0", "total": 1000, "hit": 896, "need_to_load": 0},
    ]


def test_no_hit_lines():
    assert hits("\n".join(NORMAL[1:2] + NORMAL[3:])) == []
    assert hits("") == []


# Real lines of vllm-ascend with Mooncake from the issue trackers (tests/unit/recordings/failure-lines/, each block
# under its issue's address): every failure line is caught, and the healthy lines of the same logs are not.
RECORDED = Path(__file__).parent / "recordings" / "failure-lines"


def recorded(name: str) -> list[str]:
    return [x for x in (RECORDED / name).read_text().splitlines() if x and not x.startswith("#")]


@pytest.mark.parametrize("log_line", recorded("failures.log"))
def test_every_recorded_failure_line_is_caught(atlas_patterns, log_line):
    assert transfer_failures(log_line, atlas_patterns) == [log_line.strip()]


def test_the_same_logs_healthy_lines_match_nothing(atlas_patterns):
    assert transfer_failures("\n".join(recorded("healthy.log")), atlas_patterns) == []
