"""Each named trap of harness/traps.py on its own: the shipped cpu-local target passes it, one broken field fails it.

Each trap is tested here, directly on a Target; that load_target runs them all is tested once, for all of them at
once (the last tests). tests/unit/test_config*.py test loading (YAML, the shape, extends, the host's memory) and the
cases of a few traps on the shipped YAML (the seed's lease, the probe, the roles).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from harness import traps
from harness.config import ConfigError, Target, load_target

from .test_config import raw, write

GOOD = load_target("cpu-local")
ATLAS = load_target("atlas-800t-a2")
GiB = 1 << 30


def broken(edit: Callable[[dict], object], base: Target = GOOD) -> Target:
    """cpu-local (or `base`) with `edit` applied to its fields, validated again (shape only: the traps are what is
    tested)."""
    data = base.model_dump()
    edit(data)
    return Target.model_validate(data)


def only(problems: list[tuple[str, str]]) -> tuple[str, str]:
    assert len(problems) == 1, problems
    return problems[0]


def test_metrics_port_is_not_rpc_port():
    assert traps.metrics_port_is_not_rpc_port(GOOD) == []
    t = broken(lambda d: d["mooncake"]["master"].update(metrics_port=50088))
    field, message = only(traps.metrics_port_is_not_rpc_port(t))
    assert field == "mooncake.master.metrics_port" and "admin HTTP server cannot bind it" in message


def test_ports_unique_among_instances_and_the_masters_two_ports():
    assert traps.ports_unique(GOOD) == []
    t = broken(lambda d: d["instances"][1].update(port=8002))
    assert only(traps.ports_unique(t)) == ("instances[1].port",
                                           "8002 is also instances[0].port; give each its own port")
    t = broken(lambda d: d["instances"][0].update(port=50088))
    assert only(traps.ports_unique(t)) == ("instances[0].port",
                                           "50088 is also mooncake.master.port; give each its own port")
    t = broken(lambda d: d["instances"][1].update(port=9003))
    assert only(traps.ports_unique(t)) == ("instances[1].port",
                                           "9003 is also mooncake.master.metrics_port; give each its own port")


def test_master_command_matches_ports_reads_the_rpc_and_metrics_port_flags():
    assert traps.master_command_matches_ports(GOOD) == []
    t = broken(lambda d: d["mooncake"]["master"].update(command=["mooncake_master", "--port", "50089"]), ATLAS)
    assert only(traps.master_command_matches_ports(t)) == (
        "mooncake.master.command", "sets --rpc_port 50089 but mooncake.master.port is 50088; make them equal")
    t = broken(lambda d: d["mooncake"]["master"].update(command=["mooncake_master", "--rpc_port=50088",
                                                                 "--metrics_port", "9100"]))
    field, message = only(traps.master_command_matches_ports(t))
    assert field == "mooncake.master.command"
    assert "sets --metrics_port 9100 but mooncake.master.metrics_port is 9003" in message


@pytest.mark.parametrize("address", ["127.0.0.1:50099", ":50099"])
def test_master_address_matches_port_suggests_the_masters_host(address):
    assert traps.master_address_matches_port(GOOD) == []
    t = broken(lambda d: d["mooncake"]["config"].update(master_server_address=address))
    assert only(traps.master_address_matches_port(t)) == (
        "mooncake.config.master_server_address", "points at port 50099 but the master listens on 50088; "
                                                 "use 127.0.0.1:50088")


def test_instance_names_unique():
    assert traps.instance_names_unique(GOOD) == []
    t = broken(lambda d: d["instances"][1].update(name="instance-1"))
    assert only(traps.instance_names_unique(t)) == (
        "instances[1].name", "'instance-1' is also instances[0].name; names must be unique")


@pytest.mark.parametrize("flag, field", [("--host", "host"), ("--port", "port"),
                                         ("--served-model-name", "model.served_name"),
                                         ("--kv-transfer-config", "kv_transfer_config")])
def test_no_owned_flags_in_args_in_either_form(flag, field):
    assert traps.no_owned_flags_in_args(GOOD) == []
    for given in ([f"{flag}=x"], [flag, "x"]):
        t = broken(lambda d, given=given: d["instances"][0]["args"].extend(given))
        assert only(traps.no_owned_flags_in_args(t)) == ("instances[0].args", f"contains {flag}; set {field} instead")


def test_visible_devices_known_and_unshared_refuses_a_shared_or_unchecked_npu():
    assert traps.visible_devices_known_and_unshared(GOOD) == []
    t = broken(lambda d: d["instances"][1].update(visible_devices=[3, 4, 5, 6]))
    assert only(traps.visible_devices_known_and_unshared(t)) == ("instances[1].visible_devices",
                                                                 "device 3 is also used by instance-1")
    t = broken(lambda d: d["instances"][1].update(visible_devices=[4, 5, 6, 8]))
    field, message = only(traps.visible_devices_known_and_unshared(t))
    assert field == "instances[1].visible_devices" and "device 8 is not in npu.devices" in message


def test_visible_devices_env_agrees():
    t = broken(lambda d: d["instances"][0]["env"].update(ASCEND_RT_VISIBLE_DEVICES="0,1,2,3"))
    assert traps.visible_devices_env_agrees(GOOD) == traps.visible_devices_env_agrees(t) == []
    t = broken(lambda d: d["instances"][0]["env"].update(ASCEND_RT_VISIBLE_DEVICES="0,1"))
    field, message = only(traps.visible_devices_env_agrees(t))
    assert field == "instances[0].env.ASCEND_RT_VISIBLE_DEVICES"
    assert "is '0,1' but visible_devices is [0,1,2,3]" in message


def test_mooncake_config_path_agrees_only_for_pooled_instances():
    assert traps.mooncake_config_path_agrees(GOOD) == []
    t = broken(lambda d: d["instances"][0]["env"].update(MOONCAKE_CONFIG_PATH="/tmp/mooncake.json"))
    field, message = only(traps.mooncake_config_path_agrees(t))
    assert field == "instances[0].env.MOONCAKE_CONFIG_PATH"
    assert "is '/tmp/mooncake.json' but mooncake.json is written to '/vllm-workspace/mooncake.json'" in message
    t = broken(lambda d: d["instances"][1]["env"].pop("MOONCAKE_CONFIG_PATH"))
    field, message = only(traps.mooncake_config_path_agrees(t))
    assert field == "instances[1].env.MOONCAKE_CONFIG_PATH" and "is None but mooncake.json is written to" in message
    t = broken(lambda d: (d["instances"][1]["env"].pop("MOONCAKE_CONFIG_PATH"),
                          d["instances"][1].update(kv_transfer_config=None)))
    assert traps.mooncake_config_path_agrees(t) == []


def test_rpc_ports_unique_as_a_number_or_a_string():
    def rpc(*ports):
        def edit(d):
            for x, port in zip(d["instances"], ports):
                x["kv_transfer_config"]["kv_connector_extra_config"] = {"mooncake_rpc_port": port}
        return broken(edit)

    assert traps.rpc_ports_unique(GOOD) == traps.rpc_ports_unique(rpc(12345, 12346)) == []
    field, message = only(traps.rpc_ports_unique(rpc(12345, "12345")))
    assert field == "instances[1].kv_transfer_config.kv_connector_extra_config.mooncake_rpc_port"
    assert "is also instance-1" in message and "collide" in message


def test_rpc_ports_unique_catches_the_seeds_own_ports():
    assert traps.rpc_ports_unique(ATLAS) == []

    def as_in_the_seed(d):
        for x in d["instances"]:
            x["kv_transfer_config"]["kv_connector_extra_config"]["mooncake_rpc_port"] = "0"

    field, message = only(traps.rpc_ports_unique(broken(as_in_the_seed, ATLAS)))
    assert field == "instances[1].kv_transfer_config.kv_connector_extra_config.mooncake_rpc_port"
    assert message.startswith("'0' is also instance-1;") and "collide" in message


def test_pool_keys_agree_counts_an_unset_tp_as_one():
    assert traps.pool_keys_agree(GOOD) == []
    t = broken(lambda d: d["instances"][1]["args"].extend(["-tp", "2"]))
    field, message = only(traps.pool_keys_agree(t))
    assert field == "instances[1].args --tensor-parallel-size"
    assert "tensor parallel size '2' differs from instances[0] (instance-1) '1'" in message


@pytest.mark.parametrize("model_path", ["/model/qwen2-tiny", "/model/other/"])
def test_pool_keys_agree_on_the_model_path_string(model_path):
    t = broken(lambda d: d["instances"][1].update(model_path=model_path))  # cpu-local's is /model/qwen2-tiny/
    assert only(traps.pool_keys_agree(t)) == (
        "instances[1].model_path", f"model path {model_path!r} differs from instances[0] (instance-1) "
                                   "'/model/qwen2-tiny/'; instances sharing a pool must match exactly or they never "
                                   "hit each other's KV (pool keys include it)")
    unpooled = broken(lambda d: d["instances"][1].update(model_path=model_path, kv_transfer_config=None))
    assert traps.pool_keys_agree(unpooled) == []  # not in the pool: not compared


def test_pool_keys_agree_on_the_block_size_in_either_form():
    def block_size_64(d):
        args = d["instances"][1]["args"]
        del args[args.index("--block-size"):args.index("--block-size") + 2]
        args.append("--block-size=64")

    field, message = only(traps.pool_keys_agree(broken(block_size_64)))
    assert field == "instances[1].args --block-size"
    assert "block size '64' differs from instances[0] (instance-1) '128'" in message


def test_kv_shaping_flags_agree():
    assert traps.kv_shaping_flags_agree(GOOD) == []
    t = broken(lambda d: d["instances"][1]["args"].extend(["--revision", "abc"]))
    field, message = only(traps.kv_shaping_flags_agree(t))
    assert field == "instances[1].args --revision" and "'abc' differs from instances[0] (instance-1) None" in message


def test_comparisons_valid():
    assert traps.comparisons_valid(GOOD) == []
    t = broken(lambda d: d["benchmark"].update(eviction=None, comparisons=[
        {"name": "cross_instance_ttft_fraction", "target": "evict", "ratio": 0.5},
        {"name": "hit_vs_hit", "baseline": "local_hit", "target": "local_hit", "ratio": 1.0},
    ]))
    assert traps.comparisons_valid(t) == [
        ("benchmark.comparisons[0].name", "'cross_instance_ttft_fraction' is already used; names must be unique"),
        ("benchmark.comparisons[0]", "uses the evict step but benchmark.eviction is not set"),
        ("benchmark.comparisons[1]", "compares local_hit with itself"),
    ]


def test_eviction_seed_differs():
    assert traps.eviction_seed_differs(GOOD) == []
    assert traps.eviction_seed_differs(broken(lambda d: d["benchmark"].update(eviction={"seed": 7}))) == []
    t = broken(lambda d: d["benchmark"].update(eviction={"seed": d["benchmark"]["seed"]}))
    field, message = only(traps.eviction_seed_differs(t))
    assert field == "benchmark.eviction.seed" and "dataset B would be dataset A" in message


def test_lookup_rpc_ports_unique_default_collides():
    assert traps.lookup_rpc_ports_unique(GOOD) == []

    def default_ports(d):
        for x in d["instances"]:
            x["kv_transfer_config"].pop("kv_connector_extra_config", None)

    field, message = only(traps.lookup_rpc_ports_unique(broken(default_ports)))
    assert field == "instances[1].kv_transfer_config.kv_connector_extra_config.lookup_rpc_port"
    assert "'0' (the default) is also instance-1's" in message and "the other hangs" in message


def test_resilience_seed_differs():
    assert traps.resilience_seed_differs(GOOD) == []
    t = broken(lambda d: d.update(resilience={"seed": d["benchmark"]["correctness"]["seed"]}))
    field, message = only(traps.resilience_seed_differs(t))
    assert field == "resilience.seed" and "equals benchmark.correctness.seed" in message


def test_roles_name_two_instances_names_the_bad_first_role():
    assert traps.roles_name_two_instances(GOOD) == []
    t = broken(lambda d: d["benchmark"].update(roles={"first": "instance-3", "peer": "instance-1"}))
    field, message = only(traps.roles_name_two_instances(t))
    assert field == "benchmark.roles.first" and "(instances: instance-1, instance-2)" in message


def test_probe_settings_usable_need_more_than_one_block_unless_off():
    assert traps.probe_settings_usable(GOOD) == []
    t = broken(lambda d: d["benchmark"]["correctness"].update(input_len=128))
    field, message = only(traps.probe_settings_usable(t))
    assert field == "benchmark.correctness.input_len" and "hold no full block of 128" in message
    off = broken(lambda d: d["benchmark"]["correctness"].update(input_len=128, mode="off"))
    assert traps.probe_settings_usable(off) == []


def test_evidence_sources_usable_refuses_a_source_named_twice():
    assert traps.evidence_sources_usable(GOOD) == []
    t = broken(lambda d: d["benchmark"].update(evidence=["master_gets", "master_gets"]))
    field, message = only(traps.evidence_sources_usable(t))
    assert field == "benchmark.evidence" and "names a source twice" in message


def test_prompt_details_enabled_on_pooled_instances():
    assert traps.prompt_details_enabled(GOOD) == []
    without = broken(lambda d: d["instances"][0]["args"].remove("--enable-prompt-tokens-details"))
    field, message = only(traps.prompt_details_enabled(without))
    assert field == "instances[0].args"
    assert "the correctness probe (benchmark.correctness) and the cached_tokens evidence source" in message
    unpooled = broken(lambda d: (d["instances"][0]["args"].remove("--enable-prompt-tokens-details"),
                                 d["instances"][0].update(kv_transfer_config=None)))
    assert traps.prompt_details_enabled(unpooled) == []


def test_master_flags_known_to_version():
    assert traps.master_flags_known_to_version(GOOD) == []  # no mooncake.version: nothing known
    t = broken(lambda d: (d["mooncake"].update(version="0.3.7.post2"),
                          d["mooncake"]["master"]["command"].append("-default_kv_lease_ttl=10s")))
    found = traps.master_flags_known_to_version(t)
    assert [f for f, _ in found] == ["mooncake.master.command"] * 2
    assert "passes --metrics_host" in found[0][1] and "takes a plain number of milliseconds" in found[1][1]
    later = broken(lambda d: (d["mooncake"].update(version="0.3.13.post1"),
                              d["mooncake"]["master"]["command"].append("-default_kv_lease_ttl=10s")))
    assert traps.master_flags_known_to_version(later) == []
    # 0.3.11.post1 (tests/unit/recordings/mooncake-0.3.11.post1/help-defaults.txt): units yes, --metrics_host no.
    guide = broken(lambda d: (d["mooncake"].update(version="0.3.11.post1"),
                              d["mooncake"]["master"]["command"].append("-default_kv_lease_ttl=10s")))
    [(field, message)] = traps.master_flags_known_to_version(guide)
    assert field == "mooncake.master.command" and "passes --metrics_host" in message


def test_lease_outlasts_transfer_timeout_in_the_flags_unit():
    assert traps.lease_outlasts_transfer_timeout(GOOD) == []
    t = broken(lambda d: (d["mooncake"]["master"]["command"].append("--default_kv_lease_ttl=1s"),
                          d["instances"][1]["env"].update(ASCEND_TRANSFER_TIMEOUT="5000")))
    field, message = only(traps.lease_outlasts_transfer_timeout(t))
    assert field == "mooncake.master.command"
    assert ("the master's KV lease is 1000 ms (--default_kv_lease_ttl 1s) but instances[1].env.ASCEND_TRANSFER_TIMEOUT"
            " is 5000 ms") in message


def test_pool_memory_fits_host_counts_pipeline_ranks():
    assert traps.pool_memory_fits_host(GOOD, None) == traps.pool_memory_fits_host(GOOD, 64 * GiB) == []
    t = broken(lambda d: [x["args"].extend(["-pp", "2"]) for x in d["instances"]])
    assert traps.pool_memory_fits_host(t, 8 * GiB) == []
    field, message = only(traps.pool_memory_fits_host(t, 4 * GiB))
    assert field == "mooncake.config.global_segment_size"
    assert "4 pooled ranks (instance-1: 2, instance-2: 2)" in message and "= 5 GiB" in message


def test_emulator_covers_devices():
    assert traps.emulator_covers_devices(GOOD) == []
    assert traps.emulator_covers_devices(broken(lambda d: d["npu"].update(emulator=None))) == []
    t = broken(lambda d: (d["npu"]["emulator"]["devices"].pop(0), d["npu"]["emulator"]["devices"].pop(7)))
    assert only(traps.emulator_covers_devices(t)) == ("npu.emulator.devices",
                                                      "has no state for device(s) [0, 7]; add them")


def test_model_volume_mounted():
    assert traps.model_volume_mounted(GOOD) == []
    t = broken(lambda d: d["container"]["volumes"][0].update(container="/model/other"))
    field, message = only(traps.model_volume_mounted(t))
    assert field == "container.volumes" and "model.path '/model/qwen2-tiny/'" in message
    assert traps.model_volume_mounted(broken(lambda d: (d["container"].update(volumes=[]),
                                                        d["model"].update(build=None)))) == []


def named_traps() -> set[str]:
    """Every public function of harness/traps.py but check_all: each is a trap."""
    return {name for name, f in inspect.getmembers(traps, inspect.isfunction)
            if f.__module__ == traps.__name__ and not name.startswith("_") and name != "check_all"}


def test_every_named_trap_is_listed_once_and_documented():
    assert sorted(f.__name__ for f in traps.TRAPS) == sorted(named_traps())
    assert all(f.__doc__ for f in traps.TRAPS)


def test_load_target_asks_every_trap_and_reports_all_their_problems(monkeypatch):
    """The wiring, for every trap at once: load_target asks each named trap, in TRAPS order, with the validated
    target (the pool's with the given host memory), and its ConfigError holds every problem they return."""
    order, named = [f.__name__ for f in traps.TRAPS], named_traps()
    assert set(order) == named
    asked = []

    def planted(real):
        def trap(t, *host_memory):
            asked.append((real.__name__, t.name, host_memory))
            return real(t, *host_memory) + [(f"planted.{real.__name__}", "a problem")]
        return trap

    spies = {f.__name__: planted(f) for f in traps.TRAPS}
    for name, spy in spies.items():
        monkeypatch.setattr(traps, name, spy)  # check_all tells the pool's trap by name
    monkeypatch.setattr(traps, "TRAPS", [spies[name] for name in order])
    with pytest.raises(ConfigError) as e:
        load_target("cpu-local", host_memory=64 * GiB)
    assert asked == [(name, "cpu-local", (64 * GiB,) if name == "pool_memory_fits_host" else ()) for name in order]
    assert e.value.problems == [(f"planted.{name}", "a problem") for name in order]  # cpu-local's own: none


def test_load_target_reports_the_real_traps_problems_together(tmp_path):
    assert load_target("cpu-local", host_memory=64 * GiB).name == "cpu-local"
    d = raw("cpu-local")
    d["model"]["build"]["output"] = "elsewhere"
    d["mooncake"]["master"]["port"] = 8002
    with pytest.raises(ConfigError) as e:
        load_target(write(tmp_path, d), host_memory=2 * GiB)
    assert [f for f, _ in e.value.problems] == [
        "instances[0].port", "mooncake.master.command", "mooncake.config.master_server_address",
        "mooncake.config.global_segment_size", "container.volumes"]
