"""Stage 1, the NPU network, as the seed's "Verify Communication Environment" runs it:
lldp, link, net health, netdetect, gateway and IP of every NPU, and hccn.conf. One result per device
and check, so a report reads "device5: link DOWN" at a glance."""

import allure
import pytest

from harness import hccn

pytestmark = [pytest.mark.acceptance, pytest.mark.environment, allure.parent_suite("acceptance"),
              allure.suite("1 environment"), allure.feature("1 environment")]


@pytest.fixture(scope="module")
def answers(tools_host, target) -> dict:
    """Every device's answer to every check, asked in one run of the tools (one `docker exec` on cpu-local)."""
    r = tools_host.run(hccn.batch_script(target.npu.hccn_tool, target.npu.devices, list(hccn.QUERIES)))
    return hccn.parse_batch(r.stdout)


def query(answers, target, device: int, check: str) -> str:
    """`hccn_tool -i N -<check> -g`'s output; a tool that did not run fails the test."""
    argv = hccn.hccn_argv(target.npu.hccn_tool, device, check)
    a = answers.get((device, check))
    if a is None:
        pytest.fail(f"device {device}: `{' '.join(argv)}` gave no answer (the batch of queries did not run)",
                    pytrace=False)
    if not a.stdout.strip() and a.rc != 0:
        pytest.fail(f"device {device}: `{' '.join(argv)}` exited {a.rc}: {a.stderr.strip()[:300]}", pytrace=False)
    return a.stdout


@pytest.fixture(scope="module")
def hccn_conf(tools_host, target) -> str | None:
    """hccn.conf's text where the checks run, None when it is not a file there (read once for all devices)."""
    f = tools_host.file(target.npu.hccn_conf)
    return f.content_string if f.is_file else None


def test_hccn_conf_present(tools_host, target):
    f = tools_host.file(target.npu.hccn_conf)
    assert f.exists, (f"{target.npu.hccn_conf} is missing where the checks run ({target.npu.checks_in}); "
                      "the seed mounts the host's /etc/hccn.conf into the container (-v /etc/hccn.conf:/etc/hccn.conf)")
    assert f.is_file, f"{target.npu.hccn_conf} exists but is not a file (a bind mount of a missing host file?)"
    hccn.parse_hccn_conf(f.content_string)  # raises, quoting the line, if it is not hccn.conf


def test_lldp_neighbour(answers, target, npu_device):
    out = query(answers, target, npu_device, "lldp")
    ifname = hccn.parse_lldp_ifname(out)
    assert ifname, (f"device {npu_device}: no switch port (Ifname) in `hccn_tool -i {npu_device} -lldp -g`: "
                    f"no LLDP neighbour, check the cable and the switch port. Output: {out.strip()[:300]!r}")


def test_link_up(answers, target, npu_device):
    link = hccn.parse_link(query(answers, target, npu_device, "link"))
    assert link == "UP", f"device {npu_device}: link {link}, expected UP (`hccn_tool -i {npu_device} -link -g`)"


def test_net_health(answers, target, npu_device):
    health = hccn.parse_net_health(query(answers, target, npu_device, "net_health"))
    assert health in target.npu.healthy_net_health, (
        f"device {npu_device}: net health {health!r}, expected {' or '.join(target.npu.healthy_net_health)} "
        f"(`hccn_tool -i {npu_device} -net_health -g`; 'Init' means netdetect has no address to probe)")


def test_netdetect_address(answers, target, npu_device):
    address = hccn.parse_netdetect(query(answers, target, npu_device, "netdetect"))
    assert address != "0.0.0.0", (f"device {npu_device}: no netdetect address (0.0.0.0); set netdetect_{npu_device} "
                                  f"in hccn.conf (`hccn_tool -i {npu_device} -netdetect -s address ...`)")


def test_default_gateway(answers, target, npu_device):
    gw = hccn.parse_gateway(query(answers, target, npu_device, "gateway"))
    assert gw.address != "0.0.0.0", (f"device {npu_device}: no default gateway "
                                     f"(`hccn_tool -i {npu_device} -gateway -g`)")


def test_ip_matches_hccn_conf(answers, hccn_conf, target, npu_device):
    ip = hccn.parse_ip(query(answers, target, npu_device, "ip"))
    assert ip.ip, f"device {npu_device}: no IP (`hccn_tool -i {npu_device} -ip -g`: no ip was preset)"
    assert hccn_conf is not None, f"device {npu_device}: IP {ip.ip} but {target.npu.hccn_conf} is missing"
    expected = hccn.parse_hccn_conf(hccn_conf).get(npu_device, {}).get("address")
    assert ip.ip == expected, (f"device {npu_device}: IP {ip.ip} (`hccn_tool -ip -g`) but {target.npu.hccn_conf} "
                               f"says address_{npu_device}={expected}")


@pytest.fixture(scope="module")
def npu_smi_info(tools_host, target) -> str:
    return tools_host.run("%s info", target.npu.npu_smi).stdout  # one table for every device


def test_npu_health(npu_smi_info, target, npu_device):
    rows = {r.npu: r for r in hccn.parse_npu_smi_info(npu_smi_info)}
    assert npu_device in rows, f"device {npu_device}: not listed by `npu-smi info` (listed: {sorted(rows)})"
    health = rows[npu_device].health
    assert health == "OK", f"device {npu_device}: npu-smi Health {health}, expected OK (`npu-smi info`)"
