"""Stage 4, serving: each instance is healthy, serves the model by its name, answers a completion, and
has the KV connector named in the target active."""

from __future__ import annotations

import allure
import pytest

from harness import serving

pytestmark = [pytest.mark.acceptance, pytest.mark.serving, allure.parent_suite("acceptance"),
              allure.suite("4 serving"), allure.feature("4 serving")]


def test_instance_healthy(instance):
    assert serving.healthy(instance), f"{instance.name}: {instance.url}/health is not 200; log tail:\n" \
                                      f"{instance.process.tail(20)}"
    assert instance.process.alive(), f"{instance.name}: process {instance.process.pid} is gone"


def test_served_model_listed(instance, target):
    models = serving.served_models(instance)
    assert target.model.served_name in models, (
        f"{instance.name}: /v1/models lists {models}, expected {target.model.served_name!r} (model.served_name)")


def test_completion_returns_text(instance, target):
    r = serving.complete(instance, target.model.served_name, serving.CHECK_PROMPT, max_tokens=serving.CHECK_MAX_TOKENS)
    assert r.status_code == 200, (f"{instance.name}: POST /v1/completions for model {target.model.served_name!r} "
                                  f"answered {r.status_code}: {r.text[:300]}")
    out = r.json()
    choice = out["choices"][0]
    assert out["usage"]["completion_tokens"] > 0 and choice["text"], (
        f"{instance.name}: the completion returned no text: {out}")


def test_kv_connector_active(instance, instance_spec, target):
    kv = instance_spec.kv_transfer_config
    if kv is None:
        pytest.skip(f"{instance.name} has no kv_transfer_config in the target: it does not use the pool")
    line = serving.connector_line(kv.kv_connector)
    assert line in instance.process.log(), (
        f"{instance.name}: its log never says {line!r} (kv_transfer_config.kv_connector); it started without it")
    if "external_hits" in target.benchmark.evidence:  # vLLM 0.11 has no external counters at all
        m = serving.metrics(instance)
        assert m.has("vllm:external_prefix_cache_queries"), (
            f"{instance.name}: /metrics has no vllm:external_prefix_cache_queries_total, which benchmark.evidence "
            "external_hits reads: no KV connector is active, or this vLLM has no external-hit counters")
