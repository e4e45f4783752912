"""Stage 1, the NPU network, as the seed's "Verify Communication Environment" runs it:
lldp, link, net health, netdetect, gateway and IP of every NPU, and hccn.conf. One result per device
and check, so a report reads "device5: link DOWN" at a glance."""

import allure
import pytest

from harness import hccn

pytestmark = [pytest.mark.acceptance, pytest.mark.environment, allure.parent_suite("acceptance"),
              allure.suite("1 environment"), allure.feature("1 environment")]


def query(tools_host, target, device: int, check: str) -> str:
    """Run `hccn_tool -i N -<check> -g` where the tools are; a tool that does not run fails the test."""
    argv = hccn.hccn_argv(target.npu.hccn_tool, device, check)
    r = tools_host.run(" ".join(["%s"] * len(argv)), *argv)  # testinfra quotes each argument
    if not r.stdout.strip() and r.rc != 0:
        pytest.fail(f"device {device}: `{' '.join(argv)}` exited {r.rc}: {r.stderr.strip()[:300]}", pytrace=False)
    return r.stdout


def test_hccn_conf_present(tools_host, target):
    f = tools_host.file(target.npu.hccn_conf)
    assert f.exists, (f"{target.npu.hccn_conf} is missing where the checks run ({target.npu.checks_in}); "
                      "the seed mounts the host's /etc/hccn.conf into the container (-v /etc/hccn.conf:/etc/hccn.conf)")
    assert f.is_file, f"{target.npu.hccn_conf} exists but is not a file (a bind mount of a missing host file?)"
    hccn.parse_hccn_conf(f.content_string)  # raises, quoting the line, if it is not hccn.conf


def test_lldp_neighbour(tools_host, target, npu_device):
    out = query(tools_host, target, npu_device, "lldp")
    ifname = hccn.parse_lldp_ifname(out)
    assert ifname, (f"device {npu_device}: no switch port (Ifname) in `hccn_tool -i {npu_device} -lldp -g`: "
                    f"no LLDP neighbour, check the cable and the switch port. Output: {out.strip()[:300]!r}")


def test_link_up(tools_host, target, npu_device):
    link = hccn.parse_link(query(tools_host, target, npu_device, "link"))
    assert link == "UP", f"device {npu_device}: link {link}, expected UP (`hccn_tool -i {npu_device} -link -g`)"


def test_net_health(tools_host, target, npu_device):
    health = hccn.parse_net_health(query(tools_host, target, npu_device, "net_health"))
    assert health in target.npu.healthy_net_health, (
        f"device {npu_device}: net health {health!r}, expected {' or '.join(target.npu.healthy_net_health)} "
        f"(`hccn_tool -i {npu_device} -net_health -g`; 'Init' means netdetect has no address to probe)")


def test_netdetect_address(tools_host, target, npu_device):
    address = hccn.parse_netdetect(query(tools_host, target, npu_device, "netdetect"))
    assert address != "0.0.0.0", (f"device {npu_device}: no netdetect address (0.0.0.0); set netdetect_{npu_device} "
                                  f"in hccn.conf (`hccn_tool -i {npu_device} -netdetect -s address ...`)")


def test_default_gateway(tools_host, target, npu_device):
    gw = hccn.parse_gateway(query(tools_host, target, npu_device, "gateway"))
    assert gw.address != "0.0.0.0", (f"device {npu_device}: no default gateway "
                                     f"(`hccn_tool -i {npu_device} -gateway -g`)")


def test_ip_matches_hccn_conf(tools_host, target, npu_device):
    conf = tools_host.file(target.npu.hccn_conf)
    ip = hccn.parse_ip(query(tools_host, target, npu_device, "ip"))
    assert ip.ip, f"device {npu_device}: no IP (`hccn_tool -i {npu_device} -ip -g`: no ip was preset)"
    assert conf.exists and conf.is_file, f"device {npu_device}: IP {ip.ip} but {target.npu.hccn_conf} is missing"
    expected = hccn.parse_hccn_conf(conf.content_string).get(npu_device, {}).get("address")
    assert ip.ip == expected, (f"device {npu_device}: IP {ip.ip} (`hccn_tool -ip -g`) but {target.npu.hccn_conf} "
                               f"says address_{npu_device}={expected}")


def test_npu_health(tools_host, target, npu_device):
    out = tools_host.run("%s info", target.npu.npu_smi).stdout
    rows = {r.npu: r for r in hccn.parse_npu_smi_info(out)}
    assert npu_device in rows, f"device {npu_device}: not listed by `npu-smi info` (listed: {sorted(rows)})"
    health = rows[npu_device].health
    assert health == "OK", f"device {npu_device}: npu-smi Health {health}, expected OK (`npu-smi info`)"
