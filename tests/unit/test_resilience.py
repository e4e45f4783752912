"""The resilience stage's plain helpers, on real recorded texts."""

from __future__ import annotations

from harness.resilience import load_failure_cause

from .test_probe import RECORDINGS


def test_the_cause_of_failed_requests_after_the_peer_was_killed():
    # vLLM 0.32's instance 2, recorded live on cpu-local-resilience right after instance 1 was killed: its gets of
    # keys on instance 1's segment fail (TRANSFER_FAIL -800) and the scheduler fails the request.
    log = (RECORDINGS / "vllm-0.32.0" / "after-peer-killed-instance-2.log").read_text()
    cause = load_failure_cause(log)
    assert cause.startswith("vLLM failed 1 request(s) on a KV load failure from the pool")
    assert "kv_load_failure_policy=fail; 'recompute' computes the KV instead" in cause


def test_no_cause_named_where_the_log_has_none():
    healthy = (RECORDINGS / "vllm-0.32.0" / "instance-1.log").read_text()
    assert load_failure_cause(healthy) == "no KV-load-failure line in its log"
