"""Stage 1, the NPU network, as the seed's "Verify Communication Environment" runs it:
lldp, link, net health, netdetect, gateway and IP of every NPU, and hccn.conf. One result per device
and check, so a report reads "device5: link DOWN" at a glance."""

from __future__ import annotations

import shlex

import allure
import pytest

from harness import hccn
from harness.npus import NpuDevice, npu_devices, peer_pairs

pytestmark = [pytest.mark.acceptance, pytest.mark.environment, allure.parent_suite("acceptance"),
              allure.suite("1 environment"), allure.feature("1 environment")]


@pytest.fixture(scope="module")
def answers(tools_hosts, target) -> dict:
    """Every device's answer to every check on every node, asked in one run of the tools per node (one `docker exec`
    on cpu-local), keyed by (node, device, check)."""
    found = {}
    for node in target.node_list():
        npu = target.npu_of(node)
        checks = hccn.stage_checks(target.multi_node)
        r = tools_hosts[node.name].run(hccn.batch_script(npu.hccn_tool, npu.devices, checks))
        found |= {(node.name, d, check): a for (d, check), a in hccn.parse_batch(r.stdout).items()}
    return found


def query(answers, target, device: NpuDevice, check: str) -> str:
    """`hccn_tool -i N -<check> -g`'s output; a tool that did not run fails the test."""
    argv = hccn.hccn_argv(target.npu_of(target.node(device.node)).hccn_tool, device.id, check)
    a = answers.get((device.node, device.id, check))
    if a is None:
        pytest.fail(f"{device.label}: `{' '.join(argv)}` gave no answer (the batch of queries did not run)",
                    pytrace=False)
    text = hccn.readable(a)  # stdout, or the driver's "no ip / no gateway was preset" line on stderr
    if text is None:
        pytest.fail(f"{device.label}: `{' '.join(argv)}` exited {a.rc}: {a.stderr.strip()[:300]!r}", pytrace=False)
    return text


@pytest.fixture(scope="module")
def hccn_confs(tools_hosts, target) -> dict[str, str | None]:
    """Each node's hccn.conf text where the checks run, None when it is not a file there (read once per node)."""
    found = {}
    for node in target.node_list():
        f = tools_hosts[node.name].file(target.npu_of(node).hccn_conf)
        found[node.name] = f.content_string if f.is_file else None
    return found


def test_hccn_conf_present(tools_hosts, target, node_name):
    npu = target.npu_of(target.node(node_name))
    f = tools_hosts[node_name].file(npu.hccn_conf)
    where = f"{npu.checks_in} of {node_name}" if target.multi_node else npu.checks_in
    assert f.exists, (f"{npu.hccn_conf} is missing where the checks run ({where}); "
                      "the seed mounts the host's /etc/hccn.conf into the container (-v /etc/hccn.conf:/etc/hccn.conf)")
    assert f.is_file, f"{npu.hccn_conf} exists but is not a file (a bind mount of a missing host file?)"
    hccn.parse_hccn_conf(f.content_string)  # raises, quoting the line, if it is not hccn.conf


def test_lldp_neighbour(answers, target, npu_device):
    out = query(answers, target, npu_device, "lldp")
    ifname = hccn.parse_lldp_ifname(out)
    assert ifname, (f"{npu_device.label}: no switch port (Ifname) in `hccn_tool -i {npu_device.id} -lldp -g`: "
                    f"no LLDP neighbour, check the cable and the switch port. Output: {out.strip()[:300]!r}")


def test_link_up(answers, target, npu_device):
    link = hccn.parse_link(query(answers, target, npu_device, "link"))
    assert link == "UP", f"{npu_device.label}: link {link}, expected UP (`hccn_tool -i {npu_device.id} -link -g`)"


def test_net_health(answers, target, npu_device):
    health = hccn.parse_net_health(query(answers, target, npu_device, "net_health"))
    npu = target.npu_of(target.node(npu_device.node))
    assert health in npu.healthy_net_health, (
        f"{npu_device.label}: net health {health!r}, expected {' or '.join(npu.healthy_net_health)} "
        f"(`hccn_tool -i {npu_device.id} -net_health -g`) by the target's rule net_health_rule: {npu.net_health_rule} "
        + ("(the seed guide asks every NPU for Success; 'Init' means the detection task is still starting, e.g. no "
           "netdetect address; a target that accepts Init, as Huawei's cluster tooling does, says ascend-cluster)"
           if npu.net_health_rule == "seed" else "(Success or Init, as Huawei's cluster tooling takes them)"))


def test_netdetect_address(answers, target, npu_device):
    address = hccn.parse_netdetect(query(answers, target, npu_device, "netdetect"))
    assert address != "0.0.0.0", (f"{npu_device.label}: no netdetect address (0.0.0.0); set "
                                  f"netdetect_{npu_device.id} in hccn.conf "
                                  f"(`hccn_tool -i {npu_device.id} -netdetect -s address ...`)")


def test_default_gateway(answers, target, npu_device):
    gw = hccn.parse_gateway(query(answers, target, npu_device, "gateway"))
    assert gw.address not in (None, "0.0.0.0"), (f"{npu_device.label}: no default gateway "
                                                 f"(`hccn_tool -i {npu_device.id} -gateway -g`: no gateway was preset)")


def test_ip_matches_hccn_conf(answers, hccn_confs, target, npu_device):
    ip = hccn.parse_ip(query(answers, target, npu_device, "ip"))
    conf_path = target.npu_of(target.node(npu_device.node)).hccn_conf
    assert ip.ip, f"{npu_device.label}: no IP (`hccn_tool -i {npu_device.id} -ip -g`: no ip was preset)"
    hccn_conf = hccn_confs[npu_device.node]
    assert hccn_conf is not None, f"{npu_device.label}: IP {ip.ip} but {conf_path} is missing"
    expected = hccn.parse_hccn_conf(hccn_conf).get(npu_device.id, {}).get("address")
    assert ip.ip == expected, (f"{npu_device.label}: IP {ip.ip} (`hccn_tool -ip -g`) but {conf_path} "
                               f"says address_{npu_device.id}={expected}")


@pytest.fixture(scope="module")
def npu_smi_infos(tools_hosts, target) -> dict[str, str]:
    """`npu-smi info` of each node: one table for every device."""
    return {n.name: tools_hosts[n.name].run(shlex.join(hccn.npu_smi_argv(target.npu_of(n).npu_smi))).stdout
            for n in target.node_list()}


def test_npu_health(npu_smi_infos, target, npu_device):
    rows = hccn.parse_npu_smi_info(npu_smi_infos[npu_device.node])
    chips = [r for r in rows if r.npu == npu_device.id]  # an A3 lists two chips under each NPU, each with its Health
    assert chips, f"{npu_device.label}: not listed by `npu-smi info` (listed: {sorted({r.npu for r in rows})})"
    bad = [r for r in chips if r.health != "OK"]
    assert not bad, f"{npu_device.label}: npu-smi Health " + ", ".join(
        f"{r.health} (chip {r.chip})" if len(chips) > 1 else r.health for r in bad) + ", expected OK (`npu-smi info`)"


# Across nodes (the successor guide's checks): each NPU reaches the same NPU of the next node, the TLS switches agree,
# and no two NPUs share an address. Collected only for a target with several nodes.

def _device_ip(answers, target, device: NpuDevice) -> str | None:
    a = answers.get((device.node, device.id, "ip"))
    text = hccn.readable(a) if a is not None else None
    try:
        return hccn.parse_ip(text).ip if text is not None else None
    except hccn.ParseError:
        return None


@pytest.fixture(scope="module")
def pings(tools_hosts, target, answers) -> dict:
    """Each pair's `hccn_tool -i N -ping -g address <peer's IP>`, run on the local node at the address the peer's own
    `-ip -g` gave; one batch per node. Keyed by (node, device); a peer without an IP has no entry."""
    found = {}
    for node in target.node_list():
        tool = target.npu_of(node).hccn_tool
        commands = [(p.local.id, "ping", hccn.ping_argv(tool, p.local.id, ip)) for p in peer_pairs(target)
                    if p.local.node == node.name and (ip := _device_ip(answers, target, p.peer))]
        if commands:
            r = tools_hosts[node.name].run(hccn.batch_of(commands))
            found |= {(node.name, d): a for (d, _), a in hccn.parse_batch(r.stdout).items()}
    return found


@pytest.mark.multi_node
def test_peer_npu_reachable(pings, answers, target, peer_pair):
    local, peer = peer_pair.local, peer_pair.peer
    ip = _device_ip(answers, target, peer)
    assert ip, f"{peer.label} has no IP (`hccn_tool -i {peer.id} -ip -g`), so {local.label} has nothing to ping"
    a = pings.get((local.node, local.id))
    assert a is not None, f"{local.label}: the ping of {peer.label} did not run"
    result = hccn.parse_ping(a.stdout)
    assert result.transmitted and result.received == result.transmitted, (
        f"{local.label}: {peer.label} at {ip} is unreachable ({result.received} of {result.transmitted} replies, "
        f"{result.loss} packet loss; `hccn_tool -i {local.id} -ping -g address {ip}`): check the RoCE cabling, the "
        "switch ports and VLAN, and the two NPUs' netmask and gateway")


@pytest.mark.multi_node
def test_tls_switch_agrees(answers, target, tls_device):
    switches = {n.name: hccn.parse_tls_switch(query(answers, target, NpuDevice(n.name, tls_device, True), "tls"))
                for n in target.node_list() if tls_device in target.npu_of(n).devices}
    assert len(set(switches.values())) == 1, (
        f"device {tls_device}: the TLS switch differs across nodes ("
        + ", ".join(f"{node} {'enabled' if on else 'disabled'}" for node, on in switches.items())
        + f"; `hccn_tool -i {tls_device} -tls -g`): HCCL between them fails; set it alike on every node, e.g. "
        f"`hccn_tool -i {tls_device} -tls -s enable 0`")


@pytest.mark.multi_node
def test_npu_ips_unique_across_nodes(answers, target):
    owners: dict[str, list[str]] = {}
    for d in npu_devices(target):
        ip = _device_ip(answers, target, d)
        if ip:
            owners.setdefault(ip, []).append(d.label)
    shared = {ip: who for ip, who in owners.items() if len(who) > 1}
    assert not shared, "NPUs share an address (`hccn_tool -i N -ip -g`): " + "; ".join(
        f"{ip} on {' and '.join(who)}" for ip, who in shared.items()) + " (a copied hccn.conf?)"
