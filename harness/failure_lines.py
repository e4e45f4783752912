"""The log lines of an instance that say its pool failed: at start-up (its client never joined the pool: stage 4
names the line) or in a transfer (a KV load or store failed and vLLM recomputed it, so TTFT can look fine: stage 5
reads the logs for them).

Every wording is a source's own or a user's real log line: tests/unit/recordings/failure-lines/ holds the lines
with their issues, tests/unit/test_failure_lines.py proves each pattern on a real line and each stack's healthy
log against all of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# --- transfers: read by stage 5 (mooncake.transfer_failure_patterns) ---

# A segment that cannot mount (vllm-ascend 4269, Mooncake 709): a transfer failure in stage 5, a final one in stage 4.
SEGMENT_NOT_MOUNTED = r"(?i)failed to mount segment|mount_segment\w*failed|MountSegment: rpc error"

# Mooncake's own C++ lines (transfer engine and store client), whichever connector drives them.
MOONCAKE = [
    r"(?i)batch_?(put|get)\w* failed",  # "batchput failed,err code -800" (Mooncake issue 919)
    r"(?i)transfer(ring)? (failed|error|timed? ?out)",  # client_service.cpp, transfer_task.cpp
    r"\bTRANSFER_FAIL\b",  # client_service.cpp: "... failed: TRANSFER_FAIL (Transfer 0 failed)" (vllm-ascend 7792)
    r"(?i)transferengine initiali[sz]ation failed",  # "TransferEngine initialization failed with ret_value: N"
    r"(?i)failed to create client after \d+ retries",  # real_client.cpp: the store client gave up (9841)
    SEGMENT_NOT_MOUNTED,  # pybind_client.cpp, client.cpp: a segment that cannot mount (4269)
    r"(?i)rpc call failed",  # master_client.cpp: "RPC call failed: Connection timed out": the master unreachable (4269)
]

# vllm-ascend's connectors (0.11's MooncakeConnectorStoreV1, later mooncake_backend.py) and what runs under them on an
# NPU: the ascend_direct transport and HCCL.
VLLM_ASCEND = [
    r"(?i)failed to (put|get|load|check)\b",  # "Failed to get key [...],res:[-707, 0]", "Failed to put 8 keys out of 8"
    r"(?i)remote connection failed",  # "Remote connection failed in contains: ..."
    r"(?i)initiali[sz]e mooncake\w* failed",  # "Initialize mooncake failed." (and vLLM's "...DistributedStore failed.")
    r"(?i)memory registration failed",  # "Mooncake memory registration failed. Error is: ..."
    r"(?i)error in kvcachetransferthread",  # the transfer thread caught an exception
    r"(?i)layerwise (get|put|load|save)\w* failed",  # "Layerwise get failed"
    r"(?i)transfer slice failed",  # ascend_direct_transport.cpp: "Transfer slice failed with status: 103902" (7401)
    r"(?i)failed to (dis)?connect to(:| target| segment)",  # ascend_direct: "Failed to connect to target: ..." (5635)
    r"(?i)connect timeout to",  # ascend_direct: "Connect timeout to: IP:port, you can increase ..." (7401)
    r"(?i)failed to invoke hccl\w*",  # "Failed to invoke HcclBatchPut, hccl_result = 4" (11454), HcclBatchGet (13934)
    # 0.23's AscendStoreConnector (ascend_store/): a put thread's exception, logged with its traceback
    # (kv_transfer.py:652 "Failed to store KV cache for request %s"); a failed get of a hybrid model's request, which
    # it does not report to vLLM (kv_transfer.py:945,961, pool_worker.py:853,868 "KV load failed for hybrid request
    # %s. Skip invalid-block fallback ...").
    r"(?i)failed to store kv cache for request",
    r"(?i)kv load failed for hybrid request",
]

# vLLM's own MooncakeStoreConnector (0.32: vllm/distributed/kv_transfer/kv_connector/v1/mooncake/store/worker.py).
VLLM = [
    r"(?i)put failed for request",  # worker.py:709 "Boundary-state put failed for request %s: %d/%d keys failed"
    r"(?i)skipping mooncake load",  # worker.py:1216 "Skipping Mooncake load for request %s because key %s ..."
    r"(?i)register_buffer failed",  # "register_buffer failed for addr 0x... len N: -1"
    r"(?i)mooncake lookup failed",  # "Async Mooncake lookup failed for <req>: <error>"
    r"(?i)due to kv load failure",  # "Failing N request(s) due to KV load failure (failure_policy=fail, ..."
    # The scheduler under kv_load_failure_policy "recompute" (vLLM 0.23 scheduler.py:2413, 0.32 :3427): "Recovered from
    # KV load failure: N request(s) rescheduled (M tokens affected)." A failure line, not a recovery to count: it is
    # logged only when a load from the pool failed (N > 0), and the recompute it announces is what hides that failure
    # behind a plausible TTFT, which is why stage 5 reads the logs at all.
    r"(?i)recovered from kv load failure",
]

# One list for every target: a pattern of another stack costs nothing, and each stack's healthy log is tested
# against all of them, so none can go red on a healthy run of any stack.
TRANSFER_FAILURES = MOONCAKE + VLLM_ASCEND + VLLM


def transfer_failures(log: str, patterns: list[str], limit: int = 20) -> list[str]:
    """The log lines that say a KV transfer to or from the pool failed."""
    compiled = [re.compile(p) for p in patterns]
    hits = [line.strip() for line in log.splitlines() if any(p.search(line) for p in compiled)]
    return hits[:limit]


# --- start-up: read by stage 4 while it waits for the instances ---


@dataclass(frozen=True)
class StartupCause:
    cause: str  # as the failure message says it
    pattern: re.Pattern[str]
    final: bool  # the client gave up: the instance will not become ready; else a retry, named only if it never does


STARTUP_CAUSES = [
    # Mooncake 0.3.13 real_client.cpp:865 after 20 tries ~4.5 s apart (measured: a master that does not listen;
    # vllm-ascend 9841); 0.3.7.post2 pybind_client.cpp:185 after one (measured: a master of another version).
    StartupCause("its Mooncake client could not be created",
                 re.compile(r"(?i)failed to create client after \d+ retries|pybind_client\.cpp:\d+\] failed to create "
                            r"client\s*$"), final=True),
    # real_client.cpp:1020 (measured: global_segment_size larger than the memory it can map).
    StartupCause("its pool segment could not be allocated", re.compile(r"(?i)failed to allocate segment memory"),
                 final=True),
    # pybind_client.cpp, client.cpp (vllm-ascend 4269, Mooncake 709).
    StartupCause("its pool segment could not be mounted",
                 re.compile(SEGMENT_NOT_MOUNTED), final=True),
    # The connector's own verdict: vllm-ascend "Initialize mooncake failed.", vLLM 0.32 "Initialize
    # MooncakeDistributedStore failed.", the transfer engine's and memory registration's.
    StartupCause("its pool connector failed to initialise",
                 re.compile(r"(?i)initiali[sz]e mooncake\w* failed|transferengine initiali[sz]ation failed|"
                            r"memory registration failed"), final=True),
    # Each try's lines: 0.3.13 "master_client.cpp:361] Client not available" then "Failed to create client on port
    # N, retry 1/20" (measured); 4269 "master_client.cpp:146] RPC call failed: Connection timed out"; a master of
    # another version: "RPC call failed: failed to deserialize rpc return value" (measured). The line says which.
    # 0.3.7.post2's client.cpp:200 (with a master found through etcd) says "Failed to connect to master".
    # vllm-ascend 0.23's connector refuses its configuration at start-up: kv_connector_extra_config.backend
    # (pool_scheduler.py:153 "Unsupported KV pool backend: X"), mooncake.json's protocol, which its Mooncake backend
    # requires to be "ascend" (mooncake_backend.py:66-67 "MooncakeBackend does not support protocol 'X'."); and no
    # MOONCAKE_CONFIG_PATH (mooncake_backend.py:328, vLLM 0.23 store/worker.py:148 and 0.32 mooncake_store.py:75, one
    # wording).
    StartupCause("its connector has no such KV pool backend (kv_connector_extra_config.backend)",
                 re.compile(r"Unsupported KV pool backend: "), final=True),
    StartupCause("its connector's Mooncake backend refuses mooncake.json's protocol",
                 re.compile(r"MooncakeBackend does not support protocol "), final=True),
    StartupCause("its connector was given no mooncake.json (env MOONCAKE_CONFIG_PATH)",
                 re.compile(r"The environment variable 'MOONCAKE_CONFIG_PATH' is not set"), final=True),
    StartupCause("its calls to the Mooncake master failing",
                 re.compile(r"(?i)master_client\.cpp:\d+\] (client not available|rpc call failed)|"
                            r"failed to create client on port \d+, retry \d+/\d+|failed to connect to master"),
                 final=False),
]


@dataclass(frozen=True)
class StartupLine:
    cause: str
    line: str
    number: int  # 1-based, in the instance's log
    final: bool

    def __str__(self) -> str:
        return f"{self.cause} (log line {self.number}: {self.line[:300]!r})"


def startup_failures(log: str) -> list[StartupLine]:
    """Each start-up failure cause the log shows, once, at its first line, in the order the log shows them."""
    found: dict[str, StartupLine] = {}
    for number, line in enumerate(log.splitlines(), 1):
        for c in STARTUP_CAUSES:
            if c.cause not in found and c.pattern.search(line):
                found[c.cause] = StartupLine(c.cause, line.strip(), number, c.final)
                break
    return list(found.values())


def startup_verdict(found: list[StartupLine]) -> str:
    """What stage 4 says of an instance whose log shows start-up failures: the final one first, then what led to it."""
    final = [f for f in found if f.final]
    first, rest = (final[0], [f for f in found if f is not final[0]]) if final else (found[0], found[1:])
    return f"{first}" + "".join(f"; before or beside it: {f}" for f in rest)
