"""The two-node traps of harness/traps.py (the successor guide's deployment), each on the shipped cpu-local-2node
target, which passes them, and with one field broken the way the guide or a copied config breaks it."""

from __future__ import annotations

import pytest

from harness import traps
from harness.config import Target, load_target

from . import test_traps
from .test_traps import only

GOOD = load_target("cpu-local-2node")
ONE_NODE = load_target("cpu-local")


def broken(edit, base: Target = GOOD) -> Target:
    return test_traps.broken(edit, base)


def test_the_two_node_target_passes_every_trap():
    assert traps.check_all(GOOD) == []
    assert [n.name for n in GOOD.node_list()] == ["node1", "node2"]
    assert [GOOD.node_of(x).name for x in GOOD.instances] == ["node1", "node2"]
    assert GOOD.master_node().name == "node1"


def test_a_one_node_target_is_one_implicit_node():
    (node,) = ONE_NODE.node_list()
    assert (node.name, node.docker, ONE_NODE.container_name(node)) == ("node1", "local", "kvpool-cpu-local")
    assert ONE_NODE.mooncake_json(node) == ONE_NODE.mooncake.config
    assert [x.name for x in ONE_NODE.instances_on(node)] == ["instance-1", "instance-2"]


def test_a_nodes_npu_is_laid_over_the_targets():
    node2 = GOOD.node("node2")
    assert GOOD.npu_of(node2).emulator.devices[5].ip == "192.0.2.25"
    assert GOOD.npu_of(node2).emulator.devices[5].gateway == "192.0.2.1"  # from the target's npu
    assert GOOD.npu_of(GOOD.node("node1")).emulator.devices[5].ip == "192.0.2.15"


def test_nodes_named_and_known():
    assert traps.nodes_named_and_known(GOOD) == []
    t = broken(lambda d: d["instances"][1].update(node="node3"))
    assert only(traps.nodes_named_and_known(t)) == ("instances[1].node", "no node is named 'node3'; name one of "
                                                                         "node1, node2")
    t = broken(lambda d: d["mooncake"]["master"].update(node="node1"), ONE_NODE)
    field, message = only(traps.nodes_named_and_known(t))
    assert field == "mooncake.master.node" and "the target lists no nodes" in message
    t = broken(lambda d: d["nodes"][1].update(name="node1"))
    assert ("nodes[1].name", "'node1' is also nodes[0]; names must be unique") in traps.nodes_named_and_known(t)


def test_a_plain_tcp_daemon_needs_tls():
    t = broken(lambda d: d["nodes"][1].update(docker="tcp://node2.example:2376"))
    field, message = only(traps.nodes_named_and_known(t))
    assert field == "nodes[1].tls" and "without TLS" in message
    t = broken(lambda d: d["nodes"][1].update(docker="tcp://node2.example:2376",
                                              tls={"ca_cert": "ca.pem", "client_cert": "c.pem", "client_key": "k.pem"}))
    assert traps.nodes_named_and_known(t) == []


def test_two_nodes_cannot_share_a_container_on_one_daemon():
    t = broken(lambda d: [n.update(container_name="kvpool") for n in d["nodes"]])
    field, message = only(traps.nodes_named_and_known(t))
    assert field == "nodes[1].container_name" and "same daemon" in message


def test_node_mooncake_config_valid():
    t = broken(lambda d: d["nodes"][1]["mooncake_config"].update(local_hostnme="198.18.77.12"))
    assert only(traps.node_mooncake_config_valid(t)) == ("nodes[1].mooncake_config.local_hostnme",
                                                         "unknown mooncake.json key")


def test_master_server_address_must_be_the_masters_node():
    t = broken(lambda d: d["mooncake"]["config"].update(master_server_address="127.0.0.1:50088"))
    problems = traps.master_address_on_master_node(t)
    assert [f for f, _ in problems] == ["mooncake.config.master_server_address"] * 2
    assert "loopback, which on node node1" in problems[0][1] and "use 198.18.77.11:50088" in problems[1][1]
    t = broken(lambda d: d["nodes"][1]["mooncake_config"].update(master_server_address="198.18.77.12:50088"))
    field, message = only(traps.master_address_on_master_node(t))
    assert field == "nodes[1].mooncake_config.master_server_address"
    assert "at 198.18.77.12, but it runs on node node1 (198.18.77.11)" in message


def test_a_master_bound_to_loopback_is_unreachable_across_nodes():
    t = broken(lambda d: d["mooncake"]["master"].update(
        command=["mooncake_master", "--rpc_port=50088", "--rpc_address=127.0.0.1", "--metrics_port=9003"]))
    field, message = only(traps.master_address_on_master_node(t))
    assert field == "mooncake.master.command" and "binds loopback" in message
    assert traps.master_address_on_master_node(ONE_NODE) == []  # one node: loopback is right


@pytest.mark.parametrize("where", ["env", "node"])
def test_a_loopback_segment_address_is_unreachable_from_the_other_node(where):
    def edit(d):
        if where == "env":
            d["instances"][1]["env"]["MOONCAKE_REQUESTER_LOCAL_HOSTNAME"] = "127.0.0.1"
        else:
            d["instances"][1]["env"].pop("MOONCAKE_REQUESTER_LOCAL_HOSTNAME")
            d["nodes"][1]["mooncake_config"]["local_hostname"] = "127.0.0.1"
    field, message = only(traps.pool_addresses_reachable_across_nodes(broken(edit)))
    assert field == ("instances[1].env.MOONCAKE_REQUESTER_LOCAL_HOSTNAME" if where == "env"
                     else "nodes[1].mooncake_config.local_hostname")
    assert "127.0.0.1 is loopback: instance-2's segment on node node2 is unreachable" in message


def test_a_segment_address_of_the_other_node_is_wrong():
    t = broken(lambda d: d["instances"][1]["env"].update(MOONCAKE_REQUESTER_LOCAL_HOSTNAME="198.18.77.11"))
    field, message = only(traps.pool_addresses_reachable_across_nodes(t))
    assert "198.18.77.11 is node node1's address, but instance-2 runs on node node2" in message


def test_npu_ips_unique_across_nodes():
    assert traps.npu_ips_unique(GOOD) == []
    t = broken(lambda d: d["nodes"][1]["npu"]["emulator"]["devices"][5].update(ip="192.0.2.15"))
    field, message = only(traps.npu_ips_unique(t))
    assert field == "nodes[1].npu.emulator.devices.5.ip"
    assert message == ("192.0.2.15 is also npu.emulator.devices.5 in subnet 192.0.2.0/24; "
                       "each NPU needs its own address")
    # Another subnet is another network: the same host part is no clash.
    t = broken(lambda d: d["nodes"][1]["npu"]["emulator"]["devices"][5].update(ip="192.0.3.15"))
    assert traps.npu_ips_unique(t) == []


def test_ports_clash_per_node_only():
    t = broken(lambda d: d["instances"][1].update(port=8002))  # node 2: its own namespace
    assert traps.ports_unique(t) == []
    t = broken(lambda d: d["instances"][0].update(port=9003))
    assert only(traps.ports_unique(t)) == ("instances[0].port",
                                           "9003 is also mooncake.master.metrics_port; give each its own port")
    t = broken(lambda d: d["instances"][1].update(port=9003))  # the master is on node 1
    assert traps.ports_unique(t) == []


def test_devices_and_rpc_ports_are_per_node():
    t = broken(lambda d: d["instances"][1].update(visible_devices=[0, 1, 2, 3]))
    assert traps.visible_devices_known_and_unshared(t) == []
    t = broken(lambda d: d["instances"][1]["kv_transfer_config"]["kv_connector_extra_config"].update(
        lookup_rpc_port=50061))
    assert traps.lookup_rpc_ports_unique(t) == []
    t = broken(lambda d: d["instances"][1].update(visible_devices=[8]))
    assert only(traps.visible_devices_known_and_unshared(t)) == (
        "instances[1].visible_devices", "device 8 is not in node node2's npu.devices [0, 1, 2, 3, 4, 5, 6, 7]")


def test_network_holds_nodes():
    assert traps.network_holds_nodes(GOOD) == [] and traps.network_holds_nodes(ONE_NODE) == []
    t = broken(lambda d: d["nodes"][1].update(address="198.18.78.12"))
    assert ("nodes[1].address", "198.18.78.12 is not a host of network.subnet 198.18.77.0/24") in \
        traps.network_holds_nodes(t)
    t = broken(lambda d: d["nodes"][1].update(address="198.18.77.1"))
    assert only(traps.network_holds_nodes(t))[1] == "198.18.77.1 is the gateway docker gives the network's bridge"
    t = broken(lambda d: d["container"].update(network_mode="host"))
    field, message = only(traps.network_holds_nodes(t))
    assert field == "container.network_mode" and "set it to 'kvpool-2node'" in message
    t = broken(lambda d: d["nodes"][1].update(docker="ssh://root@node2"))
    assert only(traps.network_holds_nodes(t))[0] == "nodes[1].docker"


def test_built_image_on_local_nodes():
    assert traps.built_image_on_local_nodes(GOOD) == []
    t = broken(lambda d: (d.update(network=None), d["container"].update(network_mode="host"),
                          d["nodes"][1].update(docker="ssh://root@node2")))
    field, message = only(traps.built_image_on_local_nodes(t))
    assert field == "nodes[1].docker" and "load vllm-mooncake-cpu on that node" in message


ATLAS = load_target("atlas-800t-a2-2node")


def test_the_guides_two_atlas_nodes_pass_every_trap():
    assert traps.check_all(ATLAS) == []
    assert [(n.name, n.docker, ATLAS.container_name(n)) for n in ATLAS.node_list()] == [
        ("node1", "local", "vllm-ascend"), ("node2", "ssh://root@90.90.100.189", "vllm-ascend")]
    assert ATLAS.mooncake_json(ATLAS.node("node2")).master_server_address == "90.90.100.188:50088"
    assert [ATLAS.node_of(x).name for x in ATLAS.instances] == ["node1", "node2"]


def test_the_guide_without_vllm_host_ip_leaves_the_segment_address_to_chance():
    t = broken(lambda d: d["instances"][1]["env"].pop("VLLM_HOST_IP"), ATLAS)
    field, message = only(traps.pool_addresses_reachable_across_nodes(t))
    assert field == "instances[1].env"
    assert "set VLLM_HOST_IP (vllm-ascend) or local_hostname to 90.90.100.189" in message


def test_the_guides_one_placeholder_taken_literally_on_node_2():
    """<your_server_ip> as node 2's own address in its mooncake.json: no master listens there."""
    t = broken(lambda d: d["nodes"][1]["mooncake_config"].update(master_server_address="90.90.100.189:50088"), ATLAS)
    field, message = only(traps.master_address_on_master_node(t))
    assert field == "nodes[1].mooncake_config.master_server_address" and "use 90.90.100.188:50088" in message
