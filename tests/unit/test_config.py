"""The target model: the shipped targets load, the seed's values are kept, and a bad target file is named field by
field (YAML, shape, the seed's lease and the pool against the host's memory). Each trap alone:
tests/unit/test_traps.py."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.config import CONFIGS, ROOT, ConfigError, host_memory_bytes, load_target, parse_size, serve_argv

GiB = 1 << 30


def raw(name: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "target.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def problems(tmp_path: Path, data: dict) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as e:
        load_target(write(tmp_path, data))
    return e.value.problems


def fields(tmp_path: Path, data: dict) -> list[str]:
    return [field for field, _ in problems(tmp_path, data)]


@pytest.mark.parametrize("name", ["cpu-local", "atlas-800t-a2"])
def test_shipped_targets_load(name):
    t = load_target(name)
    assert t.name == name
    assert len(t.instances) == 2


def test_atlas_keeps_the_seed_values():
    t = load_target("atlas-800t-a2")
    c = t.container
    assert c.image == "m.daocloud.io/quay.io/ascend/vllm-ascend:v0.11.0rc2"
    assert (c.name, c.network_mode, c.shm_size) == ("vllm-ascend", "host", "1g")
    assert c.devices == [f"/dev/davinci{i}" for i in range(8)] + [
        "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"]
    assert [(v.host, v.container) for v in c.volumes] == [
        ("/usr/local/dcmi", "/usr/local/dcmi"),
        ("/usr/local/Ascend/driver/tools/hccn_tool", "/usr/local/Ascend/driver/tools/hccn_tool"),
        ("/usr/local/bin/npu-smi", "/usr/local/bin/npu-smi"),
        ("/usr/local/Ascend/driver/lib64/", "/usr/local/Ascend/driver/lib64/"),
        ("/usr/local/Ascend/driver/version.info", "/usr/local/Ascend/driver/version.info"),
        ("/etc/ascend_install.info", "/etc/ascend_install.info"),
        ("/etc/hccn.conf", "/etc/hccn.conf"),
        ("/mnt/sfs_turbo/.cache", "/root/.cache"),
    ]
    assert t.mooncake.master.port == 50088
    assert json.loads(t.mooncake.config.render()) == {
        "local_hostname": "90.90.135.188", "metadata_server": "P2PHANDSHAKE", "protocol": "ascend",
        "device_name": "", "use_ascend_direct": True, "alloc_in_same_node": True,
        "master_server_address": "90.90.135.188:50088", "global_segment_size": 107374182400,
    }
    assert [(x.port, x.visible_devices) for x in t.instances] == [(8002, [0, 1, 2, 3]), (8003, [4, 5, 6, 7])]
    b = t.benchmark
    assert (b.input_len, b.output_len, b.num_prompts, b.concurrency) == (1024, 10, 100, 25)


def test_atlas_serve_command_is_the_seeds():
    t = load_target("atlas-800t-a2")
    x = t.instances[0]
    argv = serve_argv(t, x)
    assert argv[:3] == ["vllm", "serve", "/model/Qwen2.5-72B-Instruct/"]
    seed_flags = ("--served-model-name qwen --dtype bfloat16 --max-model-len 25600 --tensor-parallel-size 4 "
                  "--host 90.90.135.188 --port 8002 --block-size 128 --max-num-batched-tokens 4096 "
                  "--gpu-memory-utilization 0.9").split()
    pairs = {argv[i]: argv[i + 1] for i in range(3, len(argv) - 1) if argv[i].startswith("--")}
    for flag, value in zip(seed_flags[::2], seed_flags[1::2]):
        assert pairs.get(flag) == value, flag
    assert "--enforce-eager" in argv and "--enable-prefix-caching" in argv
    kv = json.loads(argv[argv.index("--kv-transfer-config") + 1])
    assert kv["kv_connector"] == "MooncakeConnectorStoreV1" and kv["kv_role"] == "kv_both"
    assert kv["kv_connector_extra_config"] | {"mooncake_rpc_port": "0"} == {
        "use_layerwise": False, "mooncake_rpc_port": "0", "load_async": True, "register_buffer": True}
    assert x.env["MOONCAKE_CONFIG_PATH"] == "/vllm-workspace/mooncake.json"


@pytest.mark.parametrize("value", [0, -0.1, 1.01, 2])
@pytest.mark.parametrize("name", ["cross_instance_ttft_fraction", "local_hit_ttft_fraction"])
def test_threshold_outside_zero_one(tmp_path, name, value):
    data = raw("cpu-local")
    data["thresholds"][name] = value
    [(field, message)] = problems(tmp_path, data)
    assert field == f"thresholds.{name}" and repr(value) in message


def test_threshold_of_exactly_one_is_allowed(tmp_path):
    data = raw("cpu-local")
    data["thresholds"]["local_hit_ttft_fraction"] = 1
    assert load_target(write(tmp_path, data)).thresholds.local_hit_ttft_fraction == 1.0


def test_unknown_key_is_named(tmp_path):
    data = raw("cpu-local")
    data["benchmark"]["concurency"] = 4
    [(field, message)] = problems(tmp_path, data)
    assert field == "benchmark.concurency" and "unknown key" in message


def test_wrong_type_and_missing_field_are_named(tmp_path):
    data = raw("cpu-local")
    data["instances"][0]["port"] = "eighty"
    del data["model"]["served_name"]
    got = dict(problems(tmp_path, data))
    assert "eighty" in got["instances[0].port"]
    assert "required" in got["model.served_name"]


def test_unknown_net_health_value(tmp_path):
    data = raw("cpu-local")
    data["npu"]["emulator"]["devices"][5]["net_health"] = "Broken"
    [(field, _)] = problems(tmp_path, data)
    assert field == "npu.emulator.devices[5].net_health"


def test_not_yaml_and_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_target(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_target(bad)


def test_every_problem_is_reported_at_once(tmp_path):
    data = raw("cpu-local")
    data["instances"][1]["port"] = data["instances"][0]["port"]
    data["thresholds"]["cross_instance_ttft_fraction"] = 0
    data2 = copy.deepcopy(data)
    # pydantic problems come first; trap checks run once the shape is valid.
    assert fields(tmp_path, data) == ["thresholds.cross_instance_ttft_fraction"]
    data2["thresholds"]["cross_instance_ttft_fraction"] = 0.5
    data2["instances"][1]["visible_devices"] = [0]
    assert set(fields(tmp_path, data2)) == {"instances[1].port", "instances[1].visible_devices"}


def test_parse_size():
    assert parse_size("1g") == 1 << 30 and parse_size("512m") == 512 << 20 and parse_size("42") == 42
    with pytest.raises(ValueError):
        parse_size("1 GB")


def test_bad_target_is_a_usage_error_in_seconds(tmp_path):
    """`pytest -m acceptance --target FILE` stops with exit 4, one paragraph naming the field."""
    data = raw("cpu-local")
    data["mooncake"]["master"]["metrics_port"] = data["mooncake"]["master"]["port"]
    data["mooncake"]["config"]["global_segment_size"] = 1 << 50  # 1 PiB per rank: the run's target fits no host
    path = write(tmp_path, data)
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "pytest", "-m", "acceptance", "--target", str(path),
                          "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    took = time.monotonic() - start
    out = run.stdout + run.stderr
    assert run.returncode == 4, out
    assert "mooncake.master.metrics_port" in out and "Traceback" not in out, out
    assert "mooncake.config.global_segment_size" in out, out  # the plugin checks the run's target against this host
    assert took < 30, f"took {took:.1f} s"


@pytest.mark.parametrize("name", ["a;b", "x$(touch /tmp/p)", "`id`", "a b", "-rf"])
def test_names_with_shell_metacharacters_are_refused(tmp_path, name):
    data = raw("cpu-local")
    data["instances"][0]["name"] = name
    data["container"]["name"] = name
    assert set(fields(tmp_path, data)) == {"instances[0].name", "container.name"}


# The master's KV lease against the instances' transfer timeout (Mooncake defaults from each version's --help).

def atlas_with_master(command: list[str], version: str | None = "0.3.7.post2") -> dict:
    data = raw("atlas-800t-a2")
    data["mooncake"]["master"]["command"] = command
    if version is None:
        data["mooncake"].pop("version", None)
    else:
        data["mooncake"]["version"] = version
    return data


def test_atlas_lease_outlasts_its_transfer_timeout():
    t = load_target("atlas-800t-a2")
    assert t.mooncake.version == "0.3.7.post2"
    assert "--default_kv_lease_ttl=15000" in t.mooncake.master.command
    assert t.instances[0].env["ASCEND_TRANSFER_TIMEOUT"] == "10000"


def test_the_seeds_default_lease_is_shorter_than_its_transfer_timeout(tmp_path):
    data = atlas_with_master(["mooncake_master", "--rpc_port=50088"])  # as in the seed
    [(field, message)] = problems(tmp_path, data)
    assert field == "mooncake.master.command"
    assert "5000 ms" in message and "0.3.7.post2" in message and "ASCEND_TRANSFER_TIMEOUT is 10000 ms" in message
    assert "LEASE_EXPIRED (-707)" in message and "--default_kv_lease_ttl=10000" in message


@pytest.mark.parametrize("flag", [["--default_kv_lease_ttl=4000"], ["--default_kv_lease_ttl", "4000"],
                                  ["-default_kv_lease_ttl=4s"], ["--default_kv_lease_ttl", "4000ms"]])
def test_a_short_lease_flag_is_caught_in_every_form(tmp_path, flag):
    data = atlas_with_master(["mooncake_master", "--rpc_port=50088", *flag], version="0.3.13.post1")
    [(field, message)] = problems(tmp_path, data)
    assert field == "mooncake.master.command" and "4000 ms" in message


@pytest.mark.parametrize("flag", ["--default_kv_lease_ttl=10000", "--default_kv_lease_ttl=1m"])
def test_a_lease_as_long_as_the_timeout_is_fine(tmp_path, flag):
    data = atlas_with_master(["mooncake_master", "--rpc_port=50088", flag], version="0.3.13.post1")
    assert load_target(write(tmp_path, data)).mooncake.version == "0.3.13.post1"


def test_the_later_versions_default_lease_is_compared_too(tmp_path):
    data = atlas_with_master(["mooncake_master", "--rpc_port=50088"], version="0.3.13.post1")
    assert load_target(write(tmp_path, data))  # its default, 10000 ms, equals the timeout
    for x in data["instances"]:
        x["env"] = {**x["env"], "ASCEND_TRANSFER_TIMEOUT": "12000"}
    [(field, message)] = problems(tmp_path, data)
    assert field == "mooncake.master.command" and "10000 ms" in message and "12000" in message


@pytest.mark.parametrize("version", [None, "0.3.99"])
def test_an_unset_lease_of_an_unknown_version_is_not_guessed(tmp_path, version):
    data = atlas_with_master(["mooncake_master", "--rpc_port=50088"], version=version)
    assert load_target(write(tmp_path, data)).mooncake.version == version


def test_a_lease_that_is_no_duration(tmp_path):
    data = atlas_with_master(["mooncake_master", "--rpc_port=50088", "--default_kv_lease_ttl=soon"], version=None)
    [(field, message)] = problems(tmp_path, data)
    assert field == "mooncake.master.command" and "'soon' is not a duration" in message


def test_the_seeds_master_takes_no_unit_in_its_lease(tmp_path):
    data = atlas_with_master(["mooncake_master", "--rpc_port=50088", "--default_kv_lease_ttl=15s"])
    [(field, message)] = problems(tmp_path, data)
    assert field == "mooncake.master.command" and "plain number of milliseconds" in message


@pytest.mark.parametrize(("version", "caught"), [("0.3.7.post2", True), ("0.3.13.post1", False), (None, False)])
def test_metrics_host_is_refused_only_by_the_seeds_master(tmp_path, version, caught):
    data = atlas_with_master(["mooncake_master", "--rpc_port=50088", "--default_kv_lease_ttl=15000",
                              "--metrics_host=127.0.0.1"], version=version)
    if caught:
        [(field, message)] = problems(tmp_path, data)
        assert field == "mooncake.master.command" and "--metrics_host" in message and "unknown flag" in message
    else:
        assert load_target(write(tmp_path, data))


# The pool against the host's memory: each rank of a pooled instance registers a segment and a local buffer.

def test_the_seeds_pool_fits_a_large_host_only(tmp_path):
    assert load_target("atlas-800t-a2", host_memory=1024 * GiB).name == "atlas-800t-a2"
    with pytest.raises(ConfigError) as e:
        load_target("atlas-800t-a2", host_memory=24 * GiB)
    [(field, message)] = e.value.problems
    assert field == "mooncake.config.global_segment_size"
    assert "8 pooled ranks (instance-1: 4, instance-2: 4)" in message
    assert "100 GiB segment + 1 GiB local buffer" in message and "808 GiB" in message and "24 GiB" in message
    assert "at most 2147483648 (2 GiB) per rank" in message


def test_targets_parsed_without_their_host_skip_the_memory_check():
    assert load_target("atlas-800t-a2").mooncake.config.global_segment_size == 100 * GiB


# By hand from configs/cpu-local.yaml: 2 pooled instances x TP 1 = 2 ranks, each a 1073741824-byte (1 GiB) segment
# + a 268435456-byte (256 MiB) local buffer: 2 x 1342177280 = 2684354560 bytes (2.5 GiB).
CPU_LOCAL_POOL = 2684354560


def test_cpu_local_fits_a_host_of_its_pools_size_and_no_less():
    assert load_target("cpu-local", host_memory=CPU_LOCAL_POOL).name == "cpu-local"
    with pytest.raises(ConfigError) as e:
        load_target("cpu-local", host_memory=CPU_LOCAL_POOL - 1)
    assert [f for f, _ in e.value.problems] == ["mooncake.config.global_segment_size"]


@pytest.mark.parametrize("memtotal, fits", [(CPU_LOCAL_POOL, True), (CPU_LOCAL_POOL - 1, False)])
def test_check_host_compares_the_pool_with_this_machines_memtotal(monkeypatch, memtotal, fits):
    monkeypatch.setattr("harness.config.host_memory_bytes", lambda: memtotal)  # this machine's, as /proc/meminfo says
    if fits:
        assert load_target("cpu-local", check_host=True).name == "cpu-local"
    else:
        with pytest.raises(ConfigError, match="2.5 GiB of host memory, more than this machine's"):
            load_target("cpu-local", check_host=True)


def test_default_tp_is_one_rank_and_unpooled_instances_do_not_count(tmp_path):
    data = raw("cpu-local")  # 1 GiB segment + 256 MiB buffer per instance, TP 1
    with pytest.raises(ConfigError) as e:
        load_target(write(tmp_path, data), host_memory=2 * GiB)
    [(field, message)] = e.value.problems
    assert field == "mooncake.config.global_segment_size" and "2 pooled ranks" in message and "2.5 GiB" in message
    data["instances"][1]["kv_transfer_config"] = None
    assert load_target(write(tmp_path, data), host_memory=2 * GiB)


def test_standalone_store_segments_are_not_the_instances(tmp_path):
    data = raw("cpu-local")
    data["mooncake"]["config"] |= {"mode": "standalone-store", "global_segment_size": 100 * GiB}
    assert load_target(write(tmp_path, data), host_memory=8 * GiB)


def test_the_seeds_connector_reads_no_mode_so_its_ranks_always_hold_segments(tmp_path):
    data = raw("atlas-800t-a2")
    data["mooncake"]["config"]["mode"] = "standalone-store"  # vllm-ascend 0.11 ignores it
    with pytest.raises(ConfigError) as e:
        load_target(write(tmp_path, data), host_memory=512 * GiB)
    assert [f for f, _ in e.value.problems] == ["mooncake.config.global_segment_size"]


def test_host_memory_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24576000 kB\nMemFree:         1000 kB\n")
    assert host_memory_bytes(meminfo) == 24576000 * 1024
    assert host_memory_bytes(tmp_path / "absent") is None
    assert host_memory_bytes() > 0  # this machine's
