"""The traps of vllm-ascend 0.23's AscendStoreConnector (issue 24), from its source (vllm_ascend-0.23.0.post1 sdist,
distributed/kv_transfer/kv_pool/ascend_store/) and its KV pool guide (docs/source/user_guide/feature_guide/
kv_pool.md): the lookup socket's port with its fallbacks, the backend key, and the lease against both of Mooncake's
ascend transport timeouts. Each trap directly on a Target, then once through load_target (exit 4's path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import target_warnings, traps
from harness.config import ConfigError, Target, load_target

from .test_config import raw, write

GOOD = load_target("cpu-local")
LOOKUP = "kv_transfer_config.kv_connector_extra_config.lookup_rpc_port"


def ascend_store(*extras: dict, env: dict | None = None, master: list[str] | None = None) -> Target:
    """cpu-local with each instance on AscendStoreConnector and its own kv_connector_extra_config (the guide's
    shape), plus `env` on every instance and the master's command."""
    data = GOOD.model_dump()
    for x, extra in zip(data["instances"], extras):
        x["kv_transfer_config"].update(kv_connector="AscendStoreConnector", kv_connector_extra_config=extra)
        x["env"].update(env or {})
    if master is not None:
        data["mooncake"]["master"]["command"] = master
    return Target.model_validate(data)


GUIDE = ({"backend": "mooncake", "lookup_rpc_port": "1"}, {"backend": "mooncake", "lookup_rpc_port": "2"})


def test_the_guides_shape_with_a_port_each_passes():
    t = ascend_store(*GUIDE)
    assert traps.lookup_rpc_ports_unique(t) == [] and traps.ascend_store_backend_is_mooncake(t) == []


def test_both_on_the_guides_example_port_collide():
    # kv_pool.md's own example value is "0": two instances in one container bind one lookup socket.
    t = ascend_store({"backend": "mooncake", "lookup_rpc_port": "0"}, {"backend": "mooncake", "lookup_rpc_port": "0"})
    [(field, message)] = traps.lookup_rpc_ports_unique(t)
    assert field == f"instances[1].{LOOKUP}"
    assert message.startswith("'0' is also instance-1's; instances in one container bind one lookup IPC socket "
                              "named after it (AscendStoreConnector)")


def test_without_a_lookup_port_the_deprecated_mooncake_rpc_port_names_the_socket():
    # pool_scheduler.py:1146-1161: lookup_rpc_port, else mooncake_rpc_port, else 0.
    t = ascend_store({"backend": "mooncake", "lookup_rpc_port": "7"}, {"backend": "mooncake", "mooncake_rpc_port": "7"})
    [(field, message)] = traps.lookup_rpc_ports_unique(t)
    assert field == "instances[1].kv_transfer_config.kv_connector_extra_config.mooncake_rpc_port"
    assert message.startswith("'7' is also instance-1's")
    t = ascend_store({"backend": "mooncake", "mooncake_rpc_port": "7"},
                     {"backend": "mooncake", "mooncake_rpc_port": "8"})
    assert traps.lookup_rpc_ports_unique(t) == []


def test_neither_port_given_is_port_0_for_both():
    t = ascend_store({"backend": "mooncake"}, {"backend": "mooncake"})
    [(field, message)] = traps.lookup_rpc_ports_unique(t)
    assert field == f"instances[1].{LOOKUP}" and message.startswith("'0' (the default) is also instance-1's")


@pytest.mark.parametrize(("backend", "says"), [
    (None, "is missing: AscendStoreConnector then takes mooncake (its default)"),
    ("redis", "'redis' is none of AscendStoreConnector's backends (mooncake, memcache, yuanrong): its worker stops"),
    ("memcache", "'memcache': this suite checks a Mooncake pool"),
])
def test_the_backend_is_named_and_is_mooncake(backend, says):
    second = {"lookup_rpc_port": "2", **({} if backend is None else {"backend": backend})}
    [(field, message)] = traps.ascend_store_backend_is_mooncake(ascend_store(GUIDE[0], second))
    assert field == "instances[1].kv_transfer_config.kv_connector_extra_config.backend" and message.startswith(says)


def test_mooncake_in_capitals_is_mooncake():
    # The connector lower-cases it (ascend_store_connector.py:90-91).
    t = ascend_store(GUIDE[0], {"backend": "Mooncake", "lookup_rpc_port": "2"})
    assert traps.ascend_store_backend_is_mooncake(t) == []


def test_the_backend_trap_leaves_other_connectors_alone():
    assert traps.ascend_store_backend_is_mooncake(GOOD) == []


GUIDE_MASTER = ["mooncake_master", "--rpc_port=50088", "--rpc_address=127.0.0.1", "--metrics_port=9003",
                "--metrics_host=127.0.0.1", "--default_kv_lease_ttl", "11000"]


def test_the_guides_lease_outlasts_both_timeouts():
    # kv_pool.md: ASCEND_CONNECT_TIMEOUT=10000, ASCEND_TRANSFER_TIMEOUT=10000, --default_kv_lease_ttl 11000.
    t = ascend_store(*GUIDE, env={"ASCEND_CONNECT_TIMEOUT": "10000", "ASCEND_TRANSFER_TIMEOUT": "10000"},
                     master=GUIDE_MASTER)
    assert traps.lease_outlasts_transfer_timeout(t) == []


def test_a_connect_timeout_longer_than_the_lease_is_named():
    t = ascend_store(*GUIDE, env={"ASCEND_CONNECT_TIMEOUT": "12000", "ASCEND_TRANSFER_TIMEOUT": "10000"},
                     master=GUIDE_MASTER)
    [(field, message)] = traps.lease_outlasts_transfer_timeout(t)
    assert field == "mooncake.master.command"
    assert message.startswith("the master's KV lease is 11000 ms (--default_kv_lease_ttl 11000) but "
                              "instances[0].env.ASCEND_CONNECT_TIMEOUT is 12000 ms")


def test_load_target_refuses_both_on_one_lookup_port(tmp_path: Path):
    data = raw("cpu-local")
    for x in data["instances"]:
        x["kv_transfer_config"].update(kv_connector="AscendStoreConnector",
                                       kv_connector_extra_config={"backend": "mooncake", "lookup_rpc_port": "0"})
    with pytest.raises(ConfigError) as e:
        load_target(write(tmp_path, data), check_host=False)
    assert f"instances[1].{LOOKUP}" in [field for field, _ in e.value.problems]


def test_the_old_name_on_a_0_23_stack_collides_on_its_lookup_port_too():
    # MooncakeConnectorStoreV1 is AscendStoreConnector on 0.23 (kv_transfer/__init__.py:38-42): the same socket.
    data = load_target("atlas-800t-a2-kvpool", check_host=False).model_dump()
    for x in data["instances"]:
        x["kv_transfer_config"].update(kv_connector="MooncakeConnectorStoreV1",
                                       kv_connector_extra_config={"backend": "mooncake", "lookup_rpc_port": "0"})
    [(field, _)] = traps.lookup_rpc_ports_unique(Target.model_validate(data))
    assert field == f"instances[1].{LOOKUP}"
    # On 0.11 (the seed's image) that name reads mooncake_rpc_port, which rpc_ports_unique checks: not this trap.
    seed = load_target("atlas-800t-a2", check_host=False)
    assert traps.lookup_rpc_ports_unique(seed) == []


# PYTHONHASHSEED (issue 24 item 4). Measured with vLLM's own init_none_hash and hash_block_tokens (vllm/v1/core/
# kv_cache_utils.py, sha256 of vllm/utils/hashing.py), one block of 128 tokens, one process each: on vLLM 0.23.0 seed 0
# gives 1973e238... for NONE_HASH in every process, seed 1 6c689563..., unset a new value per process; on vLLM 0.32.0
# the same for 0 and 1, and unset one value in every process (066b1e89..., its fixed default seed).
SEED = "PYTHONHASHSEED"


def test_the_guides_seed_on_both_passes():
    t = ascend_store(*GUIDE, env={SEED: "0"})
    assert traps.hash_seeds_agree(t) == []
    assert traps.hash_seeds_agree(load_target("atlas-800t-a2-kvpool", check_host=False)) == []


def test_two_seeds_are_two_pools_of_keys():
    t = ascend_store(*GUIDE, env={SEED: "0"})
    t.instances[1].env[SEED] = "1"
    [(field, message)] = traps.hash_seeds_agree(t)
    assert field == "instances[1].env.PYTHONHASHSEED"
    assert message.startswith("'1' differs from instances[0] (instance-1)'s '0': vLLM derives the hash")


def test_no_seed_on_0_23_is_a_random_one_per_instance():
    problems = traps.hash_seeds_agree(ascend_store(*GUIDE))
    assert [f for f, _ in problems] == ["instances[0].env.PYTHONHASHSEED", "instances[1].env.PYTHONHASHSEED"]
    assert problems[0][1].startswith("is not set: vLLM 0.23, under instance-1's AscendStoreConnector, then seeds")


def test_the_containers_seed_is_the_instances():
    t = ascend_store(*GUIDE)
    t.container.env[SEED] = "0"
    assert traps.hash_seeds_agree(t) == []


def test_vllm_0_32_needs_no_seed_but_one_set_on_one_instance_only_differs():
    assert traps.hash_seeds_agree(GOOD) == []  # cpu-local: vLLM 0.32 unset is its fixed default on both
    t = GOOD.model_copy(deep=True)
    t.instances[0].env[SEED] = "0"
    [(field, message)] = traps.hash_seeds_agree(t)
    assert field == "instances[1].env.PYTHONHASHSEED" and message.startswith("unset differs from instances[0]")


def test_the_seeds_connector_is_left_alone():
    # vllm-ascend 0.11's MooncakeConnectorStoreV1 keys by its own hash: cpu-local-seed sets no seed and step 3 hits.
    assert traps.hash_seeds_agree(load_target("cpu-local-seed", check_host=False)) == []


def test_load_target_refuses_two_seeds(tmp_path: Path):
    data = raw("cpu-local")
    for x, seed in zip(data["instances"], ("0", "1")):
        x["kv_transfer_config"].update(kv_connector="AscendStoreConnector", kv_connector_extra_config=GUIDE[0])
        x.setdefault("env", {})[SEED] = seed
    data["instances"][1]["kv_transfer_config"]["kv_connector_extra_config"] = GUIDE[1]
    with pytest.raises(ConfigError) as e:
        load_target(write(tmp_path, data), check_host=False)
    assert "instances[1].env.PYTHONHASHSEED" in [field for field, _ in e.value.problems]


# The deprecated name (issue 24 item 4): a warning in the report (harness/target_warnings.py), never a refusal.

def old_name(target: str, extra: dict | None = None, image: str | None = None) -> Target:
    data = load_target(target, check_host=False).model_dump()
    for x in data["instances"]:
        x["kv_transfer_config"]["kv_connector"] = "MooncakeConnectorStoreV1"
        if extra is not None:
            x["kv_transfer_config"]["kv_connector_extra_config"] = dict(extra)
    if image is not None:
        data["container"]["image"] = image
    return Target.model_validate(data)


def test_the_old_name_on_the_0_23_image_is_a_warning_quoting_vllm_ascend():
    t = old_name("atlas-800t-a2-kvpool")
    assert traps.check_all(t) == []  # it runs
    found = target_warnings.check_all(t)
    assert [f for f, _ in found] == ["instances[0].kv_transfer_config.kv_connector",
                                     "instances[1].kv_transfer_config.kv_connector"]
    assert found[0][1] == (
        "MooncakeConnectorStoreV1 is a deprecated alias of AscendStoreConnector on vllm-ascend 0.23 (the target's "
        "image or build arguments), which logs 'It is recommended to use the AscendStoreConnector, as the "
        "MoonCakeStoreConnector will be removed in the future.'; name AscendStoreConnector")


def test_a_site_image_without_a_version_is_read_by_the_keys_only_0_23_reads():
    t = old_name("atlas-800t-a2-kvpool", image="registry.example/our-npu-serving:2026-09")
    [(_, message), _] = target_warnings.check_all(t)
    assert "vllm-ascend 0.23 (its kv_connector_extra_config has backend or lookup_rpc_port" in message
    # The same site image with the seed's keys (mooncake_rpc_port) says nothing: no signal of 0.23.
    seed_keys = old_name("atlas-800t-a2-kvpool", {"mooncake_rpc_port": "1"}, image="registry.example/ours:1")
    assert target_warnings.check_all(seed_keys) == []


@pytest.mark.parametrize("target", ["atlas-800t-a2", "atlas-800t-a2-2node", "cpu-local-seed", "cpu-local",
                                    "atlas-800t-a2-kvpool"])
def test_no_warning_where_the_name_is_current(target):
    # 0.11's own connector on the seed's targets; vLLM's and AscendStoreConnector elsewhere.
    assert target_warnings.check_all(load_target(target, check_host=False)) == []


def test_connector_log_needs_info_lines():
    # vllm-ascend 0.23 logs its hit line at INFO and nothing on a miss: at WARNING a hit would read as 0 tokens.
    t = ascend_store(*GUIDE, env={SEED: "0", "VLLM_LOGGING_LEVEL": "WARNING"})
    t = t.model_copy(update={"benchmark": t.benchmark.model_copy(update={"evidence": ["connector_log"]})})
    assert [f for f, _ in traps.evidence_sources_usable(t)] == ["benchmark.evidence", "benchmark.evidence"]
    t.instances[0].env["VLLM_LOGGING_LEVEL"] = t.instances[1].env["VLLM_LOGGING_LEVEL"] = "INFO"
    assert traps.evidence_sources_usable(t) == []
