"""The master's admin answers of both Mooncake versions the suite meets, as recorded (tests/unit/recordings/):
0.3.13.post1 (cpu-local) and 0.3.7.post2 (the seed's). Health and Prometheus parsing must take both."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import mooncake
from harness.metrics import Metrics, NotPrometheus, Sample

RECORDINGS = Path(__file__).parent / "recordings"
V0313, V037 = "0.3.13.post1", "0.3.7.post2"


def recorded(version: str, name: str) -> tuple[int, str | None, str]:
    """(status, content type, body) of one recorded answer."""
    folder = RECORDINGS / f"mooncake-{version}"
    http = json.loads((folder / "session.json").read_text())["http"][name]
    return http["status"], http["content_type"], (folder / f"{name}.txt").read_bytes().decode()


def test_recordings_are_the_versions_they_claim():
    for version in (V0313, V037):
        session = json.loads((RECORDINGS / f"mooncake-{version}" / "session.json").read_text())
        assert session["master_version"] == version
        assert session["client_steps"][0] == {"step": "setup", "client_version": version, "rc": 0,
                                              "s": session["client_steps"][0]["s"]}
    assert (RECORDINGS / f"mooncake-{V0313}" / "version.txt").read_text().startswith(
        "mooncake_master version 0.3.13.post1 (git: 7197358)")
    # 0.3.7.post2 prints only its program name for --version
    assert (RECORDINGS / f"mooncake-{V037}" / "version.txt").read_text() == "mooncake_master\n"


def test_health_json_form_is_returned_as_is():
    status, ctype, body = recorded(V0313, "health")
    assert (status, ctype) == (200, "application/json; charset=utf-8")
    health = mooncake.parse_health(status, body)
    assert health == json.loads(body)
    assert health["service_ready"] is True and health["status"] == "ok" and health["role"] == "leader"


def test_health_json_not_ready_stays_not_ready():
    _, _, body = recorded(V0313, "health")
    not_ready = body.replace('"service_ready":true', '"service_ready":false')
    assert mooncake.parse_health(200, not_ready)["service_ready"] is False


def test_health_plain_ok_of_0_3_7():
    status, ctype, body = recorded(V037, "health")
    assert (status, ctype, body) == (200, "text/plain; version=0.0.4", "OK")
    health = mooncake.parse_health(status, body)
    assert health == {"status": "ok", "service_ready": True, "text": "OK"}
    assert mooncake.parse_health(200, "OK\n")["service_ready"] is True


@pytest.mark.parametrize("status,body", [(503, "OK"), (500, '{"status":"ok","service_ready":true}'),
                                         (200, ""), (200, "NOT OK"), (200, "<html>busy</html>"), (200, "[1]"),
                                         (200, "true")])
def test_health_anything_else_is_not_healthy(status, body):
    assert mooncake.parse_health(status, body) is None


@pytest.mark.parametrize("version", [V0313, V037])
def test_master_health_over_http(monkeypatch, version):
    status, ctype, body = recorded(version, "health")
    seen = []

    def fake_get(url, timeout):
        seen.append(url)
        return SimpleNamespace(status_code=status, text=body, headers={"Content-Type": ctype})

    monkeypatch.setattr(mooncake.requests, "get", fake_get)
    target = SimpleNamespace(mooncake=SimpleNamespace(master=SimpleNamespace(host="127.0.0.1", metrics_port=9003)))
    health = mooncake.master_health(target)
    assert seen == ["http://127.0.0.1:9003/health"]
    assert health is not None and health["service_ready"] is True


def test_master_health_unreachable(monkeypatch):
    def refuse(url, timeout):
        raise mooncake.requests.ConnectionError("refused")

    monkeypatch.setattr(mooncake.requests, "get", refuse)
    target = SimpleNamespace(mooncake=SimpleNamespace(master=SimpleNamespace(host="127.0.0.1", metrics_port=9003)))
    assert mooncake.master_health(target) is None


# What a put + get + is_exist + remove of one 64 KiB key by one client with a 64 MiB segment leaves, in both.
COMMON_AFTER_CLIENT = {
    "master_key_count": 0.0,
    "master_allocated_bytes": 0.0,
    "master_total_capacity_bytes": 64.0 * 2**20,
    "master_put_start_requests_total": 1.0,
    "master_put_end_requests_total": 1.0,
    "master_exist_key_requests_total": 3.0,
    "master_get_replica_list_requests_total": 5.0,
    "master_get_replica_list_failures_total": 3.0,
    "master_mount_segment_requests_total": 1.0,
    "master_value_size_bytes_sum": 65536.0,
}


@pytest.mark.parametrize("version", [V0313, V037])
def test_metrics_after_client(version):
    status, ctype, body = recorded(version, "metrics-after-client")
    assert (status, ctype) == (200, "text/plain; version=0.0.4")
    m = Metrics.parse(body)
    assert {k: m.get(k) for k in COMMON_AFTER_CLIENT} == COMMON_AFTER_CLIENT
    # labelled series keep their labels; the histogram saw 1 value in 0.3.7.post2 and 2 in 0.3.13.post1
    assert m.get("master_value_size_bytes_bucket", le="+Inf") == m.get("master_value_size_bytes_count") >= 1
    assert not any(k.startswith("#") for k in m.names())


def test_metrics_0_3_13_lists_every_counter_even_at_zero():
    before = Metrics.parse(recorded(V0313, "metrics-before-client")[2])
    assert before.get("master_key_count") == 0 and before.get("master_total_capacity_bytes") == 0
    for name in ("master_batch_put_start_items_total", "master_batch_put_end_items_total",
                 "master_put_start_requests_total", "master_put_end_requests_total", "master_active_clients"):
        assert before.get(name) == 0, name
    after = Metrics.parse(recorded(V0313, "metrics-after-client")[2])
    assert after.get("master_active_clients") == 1 and after.get("master_remove_requests_total") == 2
    [segment] = after.series("segment_total_capacity_bytes")
    assert segment.value == 64.0 * 2**20 and segment.labels["segment"].startswith("127.0.0.1:")
    closed = Metrics.parse(recorded(V0313, "metrics-after-client-closed")[2])
    # the segment is unmounted at close; the client stays counted until its TTL (client_ttl, 10 s) runs out
    assert closed.get("master_total_capacity_bytes") == 0 and closed.get("master_active_clients") == 1


def test_metrics_0_3_7_is_empty_until_a_client_acts_and_omits_zero_counters():
    status, _, body = recorded(V037, "metrics-before-client")
    assert status == 200 and body == "" and len(Metrics.parse(body)) == 0
    after = Metrics.parse(recorded(V037, "metrics-after-client")[2])
    # counters that never moved are not exported at all: absent means 0
    for name in ("master_batch_put_start_items_total", "master_put_start_failures_total", "master_active_clients",
                 "master_ping_requests_total"):
        assert not after.has(name) and after.total(name) == 0, name
    # remove(key) without force is refused while the put's 5 s lease holds (-706); the client retried
    assert after.get("master_remove_requests_total") == 11 and after.get("master_remove_failures_total") == 10
    closed = Metrics.parse(recorded(V037, "metrics-after-client-closed")[2])
    assert closed.get("master_total_capacity_bytes") == 0 and closed.get("master_unmount_segment_requests_total") == 1


@pytest.mark.parametrize("version,status,body", [
    (V0313, 404, '{"success":false,"error_code":-704,"error_message":"OBJECT_NOT_FOUND"}'),
    (V037, 404, "OBJECT_NOT_FOUND"),
])
def test_query_key_miss(version, status, body):
    assert recorded(version, "query-key-missing")[0::2] == (status, body)


def test_store_methods_the_connectors_call():
    methods = {v: set((RECORDINGS / f"mooncake-{v}" / "store-methods.txt").read_text().split()) for v in (V0313, V037)}
    # vLLM 0.32 MooncakeStoreConnector (worker.py) and vllm-ascend 0.11.0 MooncakeConnectorStoreV1 (mooncake_store.py)
    vllm_032 = {"setup", "batch_is_exist", "batch_put_from_multi_buffers", "batch_get_into_multi_buffers",
                "register_buffer", "close", "remove_all", "batch_get_replica_desc"}
    assert vllm_032 <= methods[V0313]
    assert vllm_032 - methods[V037] == {"batch_get_replica_desc"}
    # the Ascend-only calls of vllm-ascend's non-direct path are in neither non-CUDA wheel
    assert not {"batch_get_into_ascend", "batch_put_from_ascend"} & (methods[V0313] | methods[V037])


def test_a_label_value_with_braces_and_commas_keeps_its_series():
    text = ('# TYPE vllm:request_success counter\n'
            'vllm:request_success_total{finished_reason="stop",model_name="qwen{v2},b"} 3.0\n'
            'vllm:request_success_total{finished_reason="length",model_name="qwen{v2},b"} 4.0\n')
    assert list(Metrics.parse(text)) == [
        Sample("vllm:request_success_total", {"finished_reason": "stop", "model_name": "qwen{v2},b"}, 3.0),
        Sample("vllm:request_success_total", {"finished_reason": "length", "model_name": "qwen{v2},b"}, 4.0)]


def test_text_that_is_not_prometheus_is_named_not_read_as_nothing():
    with pytest.raises(NotPrometheus, match="not Prometheus text"):
        Metrics.parse("Mem Storage: 0 B / 64.00 MB | Keys: 0\n")  # /metrics/summary, not /metrics
