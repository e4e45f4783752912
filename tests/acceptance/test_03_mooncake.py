"""Stage 3, Mooncake: importable in the container, the master serves, and the pool round-trips data."""

from __future__ import annotations

import json

import allure
import pytest

from harness import mooncake
from harness.names import DEPLOYMENT
from harness.runtime import DeploymentError

pytestmark = [pytest.mark.acceptance, pytest.mark.mooncake, allure.parent_suite("acceptance"),
              allure.suite("3 mooncake"), allure.feature("3 mooncake")]


def test_mooncake_importable(containers, node_name, record_property):
    container = containers[node_name]
    r = container.exec(["python3", "-c", mooncake.IMPORT_CHECK])
    assert r.rc == 0, f"`import mooncake, mooncake.store` failed in container {container.name}:\n{r.output[-1500:]}"
    info = json.loads(r.output.strip().splitlines()[-1])
    record_property("mooncake_file", info["file"])
    record_property("mooncake_version", info["version"])
    print(f"mooncake {info['version'] or '(version unknown: built from source?)'} at {info['file']}")


def test_master_healthy(master, target):
    health = mooncake.master_health(target)
    m = target.mooncake.master
    assert health is not None, f"master admin {mooncake.master_url(target, '/health')} does not answer 200"
    assert health.get("service_ready") is True, f"master /health says {health}, expected service_ready: true"
    assert master.alive(), f"the master process (pid {master.pid}) is gone; its log:\n{master.tail()}"
    assert mooncake.port_accepts(m.host, m.port), f"master RPC port {m.host}:{m.port} does not accept connections"


def test_master_listens_in_the_container(container_host, master, target):
    """Read inside the container, as `ps` and `ss -ltn` show it on the server: the master runs and holds both ports."""
    m = target.mooncake.master
    if container_host.exists("ps"):
        found = [p.args for p in container_host.process.filter(pid=master.pid)]
        assert found and m.command[0] in found[0], (
            f"the container's process table has {found or 'no process'} for pid {master.pid}, the master's "
            f"({m.command[0]})")
    if not (container_host.exists("ss") or container_host.exists("netstat")):
        pytest.skip("the container has neither ss nor netstat to list its sockets; its ports were probed from the "
                    "host (test_master_healthy)")
    for port, field in ((m.port, "port"), (m.metrics_port, "metrics_port")):
        listening = [a for a in (m.host, "0.0.0.0") if container_host.socket(f"tcp://{a}:{port}").is_listening]
        assert listening, (f"nothing listens on {m.host}:{port} (mooncake.master.{field}) inside the container; "
                           f"its listening sockets: {container_host.socket.get_listening_sockets()}")


def test_mooncake_json_written(containers, mooncake_config, target, node_name):
    container = containers[node_name]
    got = container.read_file(target.mooncake.config_path)
    assert got == mooncake_config[node_name], (f"{target.mooncake.config_path} in container {container.name} differs "
                                               f"from the one rendered from the target:\n{got}")


def test_pool_round_trip(containers, master, mooncake_config, target, node_name):
    """From each node's container: a client of its own joins the pool through that node's mooncake.json."""
    container = containers[node_name]
    try:
        mooncake.require_alive(master)  # else the metrics' connection error would hide the cause
    except DeploymentError as e:
        pytest.fail(f"{DEPLOYMENT}{e}", pytrace=False)
    # Mooncake 0.3.7.post2 lists no series before a client acted: an absent key count is 0 keys.
    keys_before = mooncake.master_metrics(target).total("master_key_count")
    result = mooncake.probe_pool(container, target)
    assert result["step"] == "done", f"the probe client could not join the pool: setup returned {result.get('rc')}"
    assert result["put_rc"] == 0, f"put through the pool returned {result['put_rc']}, expected 0"
    assert result["get_equal"], f"get returned {result['get_len']} bytes that differ from the 65536 put"
    assert result["remove_rc"] == 0 and result["exists_after_remove"] != 1, (
        f"the probe key {result['key']} is still in the pool after remove (rc {result['remove_rc']})")
    keys_after = mooncake.master_metrics(target).total("master_key_count")
    assert keys_after == keys_before, f"the master holds {keys_after} keys after the probe, {keys_before} before"
    print(f"pool round trip: put {result['put_ms']:.2f} ms, get {result['get_ms']:.2f} ms (64 KiB)")
