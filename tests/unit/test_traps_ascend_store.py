"""The traps of vllm-ascend 0.23's AscendStoreConnector (issue 24), from its source (vllm_ascend-0.23.0.post1 sdist,
distributed/kv_transfer/kv_pool/ascend_store/) and its KV pool guide (docs/source/user_guide/feature_guide/
kv_pool.md): the lookup socket's port with its fallbacks, the backend key, and the lease against both of Mooncake's
ascend transport timeouts. Each trap directly on a Target, then once through load_target (exit 4's path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import traps
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
