"""Parsing real hccn_tool / hccn.conf / npu-smi output, and the emulator answering in those formats."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest

from harness import hccn
from harness.config import ROOT, Emulator, load_target
from harness.emulator import render_hccn_conf, render_state

EMULATOR = ROOT / "targets/cpu-local/image/npu-emulator/npu_emulator.py"

# Samples in the formats quoted by Ascend and MindIE docs (field notes, section 3).
LLDP = """Chassis ID TLV
\tMAC: 3c:c7:86:f1:a2:01
Port ID TLV
\tIfname: 400GE1/1/5:1
System Description TLV
\tHuawei Versatile Routing Platform Software
Management Address TLV
\tIPv4: 11.12.165.1
End of LLDPDU TLV
"""

HCCN_CONF = """address_0=11.12.165.80
netmask_0=255.255.255.0
netdetect_0=11.12.165.1
gateway_0=11.12.165.1
send_arp_status_0=1
tls_enable_0=0
# a comment
address_1=11.12.165.81
netmask_1=255.255.255.0
"""

NPU_SMI_910B = """+------------------------------------------------------------------------------------------------+
| npu-smi 24.1.0                   Version: 24.1.0                                               |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910B4               | OK            | 70.0        34                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           1197 / 13553      1365 / 32768         |
+===========================+===============+====================================================+
| 1     910B4               | Warning       | 66.9        34                0    / 0             |
| 0                         | 0000:81:00.0  | 0           2411 / 15665      4    / 32768         |
+===========================+===============+====================================================+
"""

NPU_SMI_310P_WITH_PROCESSES = """+--------------------------------------------------------------------------------------------------------+
| npu-smi 23.0.0                                   Version: 23.0.0                                       |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 0       310P3                 | OK              | 12.8         61                0     / 969           |
| 0       0                     | 0000:01:00.0    | 0            577  / 7759                             |
+===============================+=================+======================================================+
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Chip                  | Process id      | Process name             | Process memory(MB)        |
+===============================+=================+======================================================+
| 0       0                     | 123456          | python                   | 2048                      |
+===============================+=================+======================================================+
"""


def test_ip_healthy_and_missing():
    assert hccn.parse_ip("ipaddr:11.12.165.80\nnetmask:255.255.255.0\n") == hccn.IpConf("11.12.165.80",
                                                                                         "255.255.255.0")
    assert hccn.parse_ip("Get ipconf failed, because no ip was preset there!\n") == hccn.IpConf(None, None)
    with pytest.raises(hccn.ParseError, match="-ip -g"):
        hccn.parse_ip("command not found")


@pytest.mark.parametrize("text,state", [("link status: UP\n", "UP"), ("link status: DOWN\n", "DOWN")])
def test_link(text, state):
    assert hccn.parse_link(text) == state


@pytest.mark.parametrize("value", ["Success", "Socket fail", "Receive timeout", "Init", "Fault"])
def test_net_health(value):
    assert hccn.parse_net_health(f"net health status: {value}\n") == value


def test_lldp_ifname_and_no_neighbour():
    assert hccn.parse_lldp_ifname(LLDP) == "400GE1/1/5:1"
    assert hccn.parse_lldp_ifname("") is None


def test_netdetect_and_gateway():
    assert hccn.parse_netdetect("netdetect address: 11.12.165.1\n") == "11.12.165.1"
    assert hccn.parse_gateway("default gateway:11.12.165.1, Iface:eth0\n") == hccn.Gateway("11.12.165.1", "eth0")
    with pytest.raises(hccn.ParseError):
        hccn.parse_gateway("error: device busy")


def test_garbage_is_a_parse_error_quoting_the_text():
    with pytest.raises(hccn.ParseError, match="dcmi module initialize failed"):
        hccn.parse_link("dcmi module initialize failed. ret is -8005\n")


def test_hccn_conf():
    conf = hccn.parse_hccn_conf(HCCN_CONF)
    assert conf[0] == {"address": "11.12.165.80", "netmask": "255.255.255.0", "netdetect": "11.12.165.1",
                       "gateway": "11.12.165.1", "send_arp_status": "1", "tls_enable": "0"}
    assert conf[1]["address"] == "11.12.165.81"
    with pytest.raises(hccn.ParseError, match="line 1"):
        hccn.parse_hccn_conf("this is not hccn.conf\n")


def test_npu_smi_910b():
    assert hccn.parse_npu_smi_info(NPU_SMI_910B) == [hccn.NpuRow(0, "910B4", "OK"),
                                                     hccn.NpuRow(1, "910B4", "Warning")]


def test_npu_smi_skips_second_rows_and_processes():
    assert hccn.parse_npu_smi_info(NPU_SMI_310P_WITH_PROCESSES) == [hccn.NpuRow(0, "310P3", "OK")]
    with pytest.raises(hccn.ParseError):
        hccn.parse_npu_smi_info("npu-smi: command not found")


# The emulator, run here on the host with its state rendered from the cpu-local target.

def emulator_with(tmp_path, driver: str = "ascend910b", **device5) -> Emulator:
    emu = load_target("cpu-local").npu.emulator
    devices = copy.deepcopy(emu.devices)
    devices[5] = devices[5].model_copy(update=device5)
    emu = emu.model_copy(update={"devices": devices, "driver": driver})
    (tmp_path / "state.json").write_text(render_state(emu))
    for tool in ("hccn_tool", "npu-smi"):
        link = tmp_path / tool
        if not link.exists():
            link.symlink_to(EMULATOR)
    return emu


def run_tool(tmp_path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NPU_EMULATOR_STATE": str(tmp_path / "state.json")}
    return subprocess.run([sys.executable, str(tmp_path / argv[0]), *argv[1:]], capture_output=True,
                          text=True, env=env, timeout=30)


def answer(tmp_path, device: int, check: str) -> hccn.Answer:
    run = run_tool(tmp_path, *hccn.hccn_argv("hccn_tool", device, check))
    return hccn.Answer(run.returncode, run.stdout, run.stderr)


def query(tmp_path, device: int, check: str) -> str:
    """What the stage-1 test reads: stdout, or the driver's "not preset" line on stderr (hccn.readable)."""
    return hccn.readable(answer(tmp_path, device, check))


def test_emulator_healthy_device(tmp_path):
    emulator_with(tmp_path)
    assert query(tmp_path, 0, "link") == "link status: UP\n"
    assert hccn.parse_net_health(query(tmp_path, 0, "net_health")) == "Success"
    assert hccn.parse_ip(query(tmp_path, 0, "ip")) == hccn.IpConf("192.0.2.10", "255.255.255.0")
    assert hccn.parse_lldp_ifname(query(tmp_path, 0, "lldp")) == "400GE1/1/1:1"
    assert hccn.parse_netdetect(query(tmp_path, 0, "netdetect")) == "192.0.2.1"
    assert hccn.parse_gateway(query(tmp_path, 0, "gateway")).address == "192.0.2.1"


def test_emulator_faults_come_from_the_yaml(tmp_path):
    emulator_with(tmp_path, link="DOWN", net_health="Fault", ip=None, ifname=None)
    assert query(tmp_path, 5, "link") == "link status: DOWN\n"
    assert query(tmp_path, 4, "link") == "link status: UP\n"
    assert hccn.parse_net_health(query(tmp_path, 5, "net_health")) == "Fault"
    assert hccn.parse_ip(query(tmp_path, 5, "ip")).ip is None
    assert hccn.parse_lldp_ifname(query(tmp_path, 5, "lldp")) is None


def test_emulator_npu_smi_and_bad_calls(tmp_path):
    emulator_with(tmp_path, health="Warning")
    rows = hccn.parse_npu_smi_info(run_tool(tmp_path, "npu-smi", "info").stdout)
    assert [r.npu for r in rows] == list(range(8))
    assert rows[5].health == "Warning" and rows[4].health == "OK" and rows[0].name == "910B4"
    assert run_tool(tmp_path, "hccn_tool", "-i", "9", "-link", "-g").returncode != 0
    assert run_tool(tmp_path, "hccn_tool", "-link").returncode != 0


def test_emulator_without_state_says_where_it_looked(tmp_path):
    emulator_with(tmp_path)
    (tmp_path / "state.json").unlink()
    run = run_tool(tmp_path, "hccn_tool", "-i", "0", "-link", "-g")
    assert run.returncode != 0 and "no state file" in run.stderr


def test_rendered_hccn_conf_matches_the_emulated_ips(tmp_path):
    emu = emulator_with(tmp_path, conf_ip="192.0.2.99")
    conf = hccn.parse_hccn_conf(render_hccn_conf(emu))
    assert conf[0]["address"] == hccn.parse_ip(query(tmp_path, 0, "ip")).ip
    assert conf[5]["address"] == "192.0.2.99" != hccn.parse_ip(query(tmp_path, 5, "ip")).ip
    assert render_hccn_conf(emu.model_copy(update={"hccn_conf": False})) is None


def test_batch_asks_every_device_every_check_and_keeps_each_answer_apart(tmp_path):
    tool = tmp_path / "hccn_tool"  # answers "<device> <flag>"; device 1 fails its -link with a message on stderr
    tool.write_text('#!/bin/sh\nif [ "$2" = 1 ] && [ "$3" = -link ]; then echo "dsmi error" >&2; exit 3; fi\n'
                    'printf "dev %s\\nflag %s\\n" "$2" "$3"\n')
    tool.chmod(0o755)
    out = subprocess.run(["sh", "-c", hccn.batch_script(str(tool), [0, 1], ["link", "ip"])], capture_output=True,
                         text=True, check=True).stdout
    answers = hccn.parse_batch(out)
    assert set(answers) == {(0, "link"), (0, "ip"), (1, "link"), (1, "ip")}
    assert answers[(0, "ip")] == hccn.Answer(0, "dev 0\nflag -ip\n", "")
    assert answers[(1, "link")] == hccn.Answer(3, "", "dsmi error\n")
    assert not list(tmp_path.glob("tmp*"))


# The cross-node checks, in the formats Ascend's docs quote (MindIE-LLM's multi_node.md, with its typos fixed;
# HIXL's README for "recv time out seq"); the lost-probe transcript is the driver source's reading (no full one is
# quoted anywhere): the probe lines, then `Command execute failed!` on stderr.
PING_OK = ("device 0 PING 10.10.100.10\nrecv seq=0,time=0.067000ms\nrecv seq=1,time=0.049000ms\n"
           "recv seq=2,time=0.047000ms\n3 packets transmitted, 3 received, 0.00% packet loss\n")
PING_PARTIAL = ("recv time out seq=0\nrecv seq=1,time=0.097000ms\nrecv seq=2,time=0.066000ms\n"
                "3 packets transmitted, 2 received, 33.33% packet loss\n")
PING_LOST = "device 0 PING 192.0.2.25\nrecv time out seq=0\nrecv time out seq=1\nrecv time out seq=2\n"
TLS = ("dev_id:0, tls switch[1](0:disable, 1:enable), tls preconfigured[1](0:non-preset, 1:preset), "
       "tls alarm time threshold[60]days\n")
TLS_OLD = "dev_id:0, tls switch[0](0:disable, 1:enable), tls alarm time threshold[60]days\ndev_id:0, [pub cert] info:\n"


def test_parse_ping_and_tls():
    assert hccn.parse_ping(PING_OK) == hccn.Ping(3, 3, "0.00%", 0)
    assert hccn.parse_ping(PING_PARTIAL) == hccn.Ping(3, 2, "33.33%", 1)
    assert hccn.parse_ping(PING_LOST) == hccn.Ping(3, 0, "100.00%", 3)
    assert hccn.parse_tls_switch(TLS) == 1 and hccn.parse_tls_switch(TLS_OLD) == 0
    with pytest.raises(hccn.ParseError, match="hccn_tool -ping -g"):
        hccn.parse_ping("ping: unknown option")
    with pytest.raises(hccn.ParseError, match="hccn_tool -tls -g"):
        hccn.parse_tls_switch("dev_id:0")


def test_emulator_ping_and_tls_come_from_the_yaml(tmp_path):
    emulator_with(tmp_path, unreachable=["192.0.2.25"], tls_switch=1)
    ok = run_tool(tmp_path, *hccn.ping_argv("hccn_tool", 4, "192.0.2.24"))
    assert ok.returncode == 0 and hccn.parse_ping(ok.stdout) == hccn.Ping(3, 3, "0.00%", 0)
    lost = run_tool(tmp_path, *hccn.ping_argv("hccn_tool", 5, "192.0.2.25"))
    assert lost.returncode == 1 and hccn.parse_ping(lost.stdout) == hccn.Ping(3, 0, "100.00%", 3)
    assert lost.stderr == "Command execute failed!\n"
    assert hccn.parse_tls_switch(query(tmp_path, 5, "tls")) == 1 and hccn.parse_tls_switch(query(tmp_path, 4, "tls")) == 0
    conf = hccn.parse_hccn_conf(render_hccn_conf(Emulator.model_validate_json((tmp_path / "state.json").read_text())))
    assert conf[5]["tls_enable"] == "1" and conf[4]["tls_enable"] == "0"


def test_emulator_link_down_loses_every_ping(tmp_path):
    emulator_with(tmp_path, link="DOWN")
    assert hccn.parse_ping(run_tool(tmp_path, *hccn.ping_argv("hccn_tool", 5, "192.0.2.24")).stdout).received == 0


def test_a_ping_batch_keeps_each_pair_apart(tmp_path):
    emulator_with(tmp_path, unreachable=["192.0.2.25"])
    tool = tmp_path / "tool"  # the emulator as the shell calls it (the image makes it executable; the repo does not)
    tool.write_text(f'#!/bin/sh\nexec {sys.executable} {tmp_path / "hccn_tool"} "$@"\n')
    tool.chmod(0o755)
    script = hccn.batch_of([(d, "ping", hccn.ping_argv(str(tool), d, f"192.0.2.2{d}")) for d in (4, 5)])
    env = {**os.environ, "NPU_EMULATOR_STATE": str(tmp_path / "state.json")}
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, check=True).stdout
    answers = hccn.parse_batch(out)
    assert hccn.parse_ping(answers[(4, "ping")].stdout).received == 3
    assert answers[(5, "ping")].rc == 1 and hccn.parse_ping(answers[(5, "ping")].stdout).received == 0


# The driver source as the authority (issue 22). Every spelling below is quoted from github.com/hicann/driver at
# commit ef377e950a32b1641c108c59481e39e9643b7d63 (hccn.SOURCE_COMMIT); paths are under src/custom/, "910B" is
# network/hccn/ascend910B/ (the A2 and A3 tool), "950" network/hccn/ascend950/ (the 950 generation's).

def test_source_is_pinned():
    assert hccn.SOURCE == "github.com/hicann/driver" and hccn.SOURCE_COMMIT.startswith("ef377e9")


@pytest.mark.parametrize("text", [
    "netdetect addr: 11.12.165.1\n",  # 910B hccn_tool/tool_ops.c:1149 and tool_ops_ext.c:613; 950 tool_tcpip_ops.c:290
    "netdetect address: 11.12.165.1\n",  # as MindIE's multi-node docs quote it (no published source prints it)
])
def test_netdetect_both_spellings(text):
    assert hccn.parse_netdetect(text) == "11.12.165.1"


def test_netdetect_unset_is_all_zeros():
    # the dsmi answer 0 -> tool_ipv4_int_to_str -> "0.0.0.0" (910B hccn_tool/tool_ops.c:1136-1149)
    assert hccn.parse_netdetect("netdetect addr: 0.0.0.0\n") == "0.0.0.0"


@pytest.mark.parametrize("text,expected", [
    ("default gateway:11.12.165.1, Iface:eth0\n", hccn.Gateway("11.12.165.1", "eth0")),  # 910B tool_ops_ext.c:856
    ("default gateway:11.12.165.1\n", hccn.Gateway("11.12.165.1", None)),  # 950 hccn_tool/tool_shell_ops.c:1243
    # stderr, exit 2 (910B cmd.c:670-672, UDA_DSMI_GATEWAY_NOT_PRESET_ERR 0x4002) or 5 (950 tool_cmd_err.c:266-268)
    ("Get gateway failed, because no gateway was preset there!\n", hccn.Gateway(None, None)),
])
def test_gateway_spellings(text, expected):
    assert hccn.parse_gateway(text) == expected


@pytest.mark.parametrize("text", [
    "Get ipconf failed, because no ip was preset there!\n",  # 910B cmd.c:673-675: stderr, exit 13 (0x400D)
    "Get ip failed, because no ip was preset there!\n",  # 950 tool_cmd_err.c:269-272: stderr, exit 6 (0x3106)
])
def test_ip_not_preset_spellings(text):
    assert hccn.parse_ip(text) == hccn.IpConf(None, None)


def test_ip_spelling():
    # 910B hccn_tool/tool_ops_ext.c:1337-1338 (DSMI_PRINT_INFO: stdout); 950 tool_shell_ops.c:2090-2091
    assert hccn.parse_ip("ipaddr:10.0.0.10\nnetmask:255.255.255.0\n") == hccn.IpConf("10.0.0.10", "255.255.255.0")


def test_readable_takes_the_not_preset_line_from_stderr_and_nothing_else():
    no_ip = "Get ipconf failed, because no ip was preset there!\n"
    assert hccn.readable(hccn.Answer(13, "", no_ip)) == no_ip
    assert hccn.readable(hccn.Answer(0, "link status: UP\n", "")) == "link status: UP\n"
    assert hccn.readable(hccn.Answer(1, "", "Command execute failed!\n")) is None  # 910B cmd.c:667-669
    lost = "device 0 PING 192.0.2.25\nrecv time out seq=0\n"  # probe lines on stdout, then the failure on stderr
    assert hccn.readable(hccn.Answer(1, lost, "Command execute failed!\n")) == lost


@pytest.mark.parametrize("value", hccn.NET_HEALTH_STATES)
def test_every_net_health_state_of_the_source(value):
    # 910B hccn_tool/tool_ops.c:36-47 and :1961 "net health status: %s"; the same table in 950 tool_tcpip_ops.c:199-210
    assert hccn.parse_net_health(f"net health status: {value}\n") == value


def test_net_health_outside_the_table_is_quoted():
    with pytest.raises(hccn.ParseError, match="Healthy-ish"):
        hccn.parse_net_health("net health status: Healthy-ish\n")


@pytest.mark.parametrize("text,switch", [
    ("dev_id:3, tls switch[1](0:disable, 1:enable), tls preconfigured[0](0:non-preset, 1:preset), "
     "tls alarm time threshold[60]days\n", 1),  # 910B hccn_tool/tool_tls.c:170-171
    ("device 3, tls switch[0](0:disable, 1:enable), tls preconfigured[1](0:non-preset, 1:preset), "
     "tls alarm time threshold[60]days\n", 0),  # 950 hccn_tool/tool_tls.c:274-275
])
def test_tls_switch_spellings(text, switch):
    assert hccn.parse_tls_switch(text) == switch


def test_ping_spellings_of_the_drivers_own_pings():
    # 950 dsmi/ascend950/dsmi_ubping.c:74 "recv time out seq:%u", :86 "recv seq:%u,time:%ld.%06ldms"
    assert hccn.parse_ping("recv seq:0,time:0.067000ms\nrecv time out seq:1\n") == hccn.Ping(2, 1, "50.00%", 1)
    # 910B hccn_product_ext/tool_cmd.c:897 "%u packets transmitted, %u received, %.2Lf%% packets loss"
    assert hccn.parse_ping("3 packets transmitted, 3 received, 0.00% packets loss\n") == hccn.Ping(3, 3, "0.00%", 0)


def test_hccn_conf_keys_as_the_tool_writes_them():
    # cfg_write_conf: "%s_%d" then "%s=%s\n" (910B hccn_tool/cfg.c:345, :124); key names from its callers:
    # IPv6address / IPv6netmask (hccn_product_ext/tool_ipv6.c:1586, :1591), IPv6gateway (:1980), udhcpc_ipv6_enable
    # (hccn_tool/tool_ops_ext.c:452), route_address_%s_netmask_%s_%d=gateway_... (hccn_tool/tool.c:1001,
    # :955), IPv6route_address_%s/%u_%d= (tool_ipv6.c:583, :540), arp_%d=%s with the `-i %s -s %s %s` command
    # (hccn_tool/tool.c:218, :455).
    conf = hccn.parse_hccn_conf(
        "address_4=10.0.0.14\nnetmask_4=255.255.255.0\n"
        "IPv6address_4=2001:db8::14\nIPv6netmask_4=64\nIPv6gateway_4=2001:db8::1\nudhcpc_ipv6_enable_4=on\n"
        "route_address_10.1.0.0_netmask_255.255.0.0_4=gateway_10.0.0.1\n"
        "IPv6route_address_2001:db8::/32_4=next_address_fe80::121b:54ff:fe96:200\n"
        "arp_4=-i eth4 -s 10.0.0.15 3c:c7:86:f1:a2:01\n"
        "lldp_portid_type_12=mac\n")
    assert conf[4]["address"] == "10.0.0.14" and conf[4]["IPv6address"] == "2001:db8::14"
    assert conf[4]["IPv6netmask"] == "64" and conf[4]["IPv6gateway"] == "2001:db8::1"
    assert conf[4]["udhcpc_ipv6_enable"] == "on"
    assert conf[4]["route_address_10.1.0.0_netmask_255.255.0.0"] == "gateway_10.0.0.1"
    assert conf[4]["IPv6route_address_2001:db8::/32"] == "next_address_fe80::121b:54ff:fe96:200"
    assert conf[4]["arp"] == "-i eth4 -s 10.0.0.15 3c:c7:86:f1:a2:01"
    assert conf[12] == {"lldp_portid_type": "mac"}  # tool_ops_ext.c:1481; A3 device ids go past 7


def test_hccn_conf_line_without_a_device_is_quoted():
    with pytest.raises(hccn.ParseError, match="line 2.*address=10.0.0.1"):
        hccn.parse_hccn_conf("address_0=10.0.0.1\naddress=10.0.0.1\n")


# npu-smi info: npucli/src/npu_info_print.c. Header :597-607 (v1), rows :417 (an A3's second chip: power "-"), :438
# (first row), :397 / :399 (second rows: `| %-26d|` on 910B, `| %-5d %-20u|` chip and Phy-ID on 910_93), :428 and
# :588-591 (the 950 build, NPU_SMI_V2: npucli/CMakeLists.txt:58). Health strings: npucli/src/npu_common.c:1548.
NPU_SMI_A3 = """+-------------------------------------------------------------------------------------------------+
| npu-smi 25.5.0                   Version: 25.5.0                                                |
+---------------------------+---------------+-----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page) |
| Chip  Phy-ID              | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)         |
+===========================+===============+=====================================================+
| 0     Ascend910           | OK            | 180.2       40                0     / 0             |
| 0     0                   | 0000:9D:00.0  | 0           0    / 0          3400  / 65536         |
+-------------------------------------------------------------------------------------------------+
| 0     Ascend910           | Critical      | -           41                0     / 0             |
| 1     1                   | 0000:9F:00.0  | 0           0    / 0          3400  / 65536         |
+===========================+===============+=====================================================+
| 1     Ascend910           | OK            | 175.0       39                0     / 0             |
| 0     2                   | 0000:99:00.0  | 0           0    / 0          3400  / 65536         |
+-------------------------------------------------------------------------------------------------+
| 1     Ascend910           | OK            | -           40                0     / 0             |
| 1     3                   | 0000:9B:00.0  | 0           0    / 0          3400  / 65536         |
+===========================+===============+=====================================================+
+---------------------------+---------------+-----------------------------------------------------+
| NPU     Chip              | Process id    | Process name             | Process memory(MB)       |
+===========================+===============+=====================================================+
| 0       0                 | 4711          | python                   | 2048                     |
+===========================+===============+=====================================================+
"""

NPU_SMI_950 = """+-------------------------------------------------------------------------------------------------+
| npu-smi 26.0.0                           Version: 26.0.0                                        |
+--------+------------------+---------------+-----------------------------------------------------+
| NPU ID | Name             | Health        | Power(W)    Temp(C)           Hugepages-Usage(page) |
|        |                  | Bus-Id        | NPU Util(%) Memory-Usage(MB)  HBM-Usage(MB)         |
+========+==================+===============+=====================================================+
| 0      | Ascend950        | OK            | 300.0       45                0     / 0             |
|        |                  | 0000:01:00.0  | 0           0    / 0          3400  / 131072        |
+========+==================+===============+=====================================================+
| 1      | Ascend950        | Alarm         | 300.0       45                0     / 0             |
|        |                  | 0000:02:00.0  | 0           0    / 0          3400  / 131072        |
+========+==================+===============+=====================================================+
+---------------------------+---------------+-----------------------------------------------------+
| NPU ID                    | Process id    | Process name             | Process memory(MB)       |
+===========================+===============+=====================================================+
| 0                         | 4711          | python                   | 2048                     |
+===========================+===============+=====================================================+
"""


def test_npu_smi_of_an_a3_keeps_each_chip():
    rows = hccn.parse_npu_smi_info(NPU_SMI_A3)
    assert [(r.npu, r.chip, r.health) for r in rows] == [(0, 0, "OK"), (0, 1, "Critical"), (1, 0, "OK"),
                                                         (1, 1, "OK")]


def test_npu_smi_chip_numbers_come_from_the_second_rows():
    # NPU 1's two chips listed second-chip first: the Chip column, not the order, says which is which.
    swapped = (NPU_SMI_A3.replace("| 0     2  ", "| 1     2  ")  # NPU 1's first listed chip says chip 1 ...
               .replace("| 1     3  ", "| 0     3  ")  # ... its second chip 0
               .replace("| 1     Ascend910           | OK            | 175.0",
                        "| 1     Ascend910           | Alarm         | 175.0"))
    rows = hccn.parse_npu_smi_info(swapped)
    assert [(r.npu, r.chip, r.health) for r in rows] == [(0, 0, "OK"), (0, 1, "Critical"), (1, 1, "Alarm"),
                                                         (1, 0, "OK")]


def test_npu_smi_with_one_chip_listed_twice_is_refused():
    # Never one chip's health silently standing for another's: NPU 0 chip 0 twice (the second was chip 1).
    twice = NPU_SMI_A3.replace("| 1     1                   | 0000:9F", "| 0     1                   | 0000:9F")
    with pytest.raises(hccn.ParseError, match=r"NPU 0 chip 0 listed twice"):
        hccn.parse_npu_smi_info(twice)


def test_npu_smi_of_the_950_layout():
    rows = hccn.parse_npu_smi_info(NPU_SMI_950)
    assert [(r.npu, r.name, r.health) for r in rows] == [(0, "Ascend950", "OK"), (1, "Ascend950", "Alarm")]


# The emulator per driver: each prints its driver's spelling on its stream with its exit code, and the parsers read
# every one of them, so stage 1 reads the same verdicts whichever driver cpu-local stands in for.

@pytest.mark.parametrize("driver", ["ascend910b", "ascend950", "mindie-doc"])
def test_emulator_healthy_device_per_driver(tmp_path, driver):
    emulator_with(tmp_path, driver=driver)
    for check in hccn.QUERIES:
        a = answer(tmp_path, 0, check)
        assert a.rc == 0 and a.stderr == "", (check, a)
    assert hccn.parse_netdetect(query(tmp_path, 0, "netdetect")) == "192.0.2.1"
    assert hccn.parse_gateway(query(tmp_path, 0, "gateway")).address == "192.0.2.1"
    assert hccn.parse_ip(query(tmp_path, 0, "ip")).ip == "192.0.2.10"
    assert hccn.parse_tls_switch(answer(tmp_path, 0, "tls").stdout) == 0


@pytest.mark.parametrize("driver,netdetect,gateway,tls", [
    ("ascend910b", "netdetect addr: 192.0.2.1\n", "default gateway:192.0.2.1, Iface:eth0\n", "dev_id:0, tls switch[0]"),
    ("ascend950", "netdetect addr: 192.0.2.1\n", "default gateway:192.0.2.1\n", "device 0, tls switch[0]"),
    ("mindie-doc", "netdetect address: 192.0.2.1\n", "default gateway:192.0.2.1, Iface:eth0\n", "dev_id:0, tls switch"),
])
def test_emulator_spellings_per_driver(tmp_path, driver, netdetect, gateway, tls):
    emulator_with(tmp_path, driver=driver)
    assert answer(tmp_path, 0, "netdetect").stdout == netdetect
    assert answer(tmp_path, 0, "gateway").stdout == gateway
    assert answer(tmp_path, 0, "tls").stdout.startswith(tls)


@pytest.mark.parametrize("driver,ip_line,ip_rc,gw_rc", [
    ("ascend910b", "Get ipconf failed, because no ip was preset there!\n", 13, 2),
    ("ascend950", "Get ip failed, because no ip was preset there!\n", 6, 5),
])
def test_emulator_not_preset_goes_to_stderr_with_the_drivers_exit_code(tmp_path, driver, ip_line, ip_rc, gw_rc):
    emulator_with(tmp_path, driver=driver, ip=None, gateway=None)
    assert answer(tmp_path, 5, "ip") == hccn.Answer(ip_rc, "", ip_line)
    gw = answer(tmp_path, 5, "gateway")
    assert (gw.rc, gw.stdout, gw.stderr) == (gw_rc, "", "Get gateway failed, because no gateway was preset there!\n")
    assert hccn.parse_ip(query(tmp_path, 5, "ip")).ip is None
    assert hccn.parse_gateway(query(tmp_path, 5, "gateway")).address is None


@pytest.mark.parametrize("driver", ["ascend910b", "ascend950", "mindie-doc"])
def test_link_down_on_device_5_is_caught_alone_on_each_driver(tmp_path, driver):
    emulator_with(tmp_path, driver=driver, link="DOWN")
    links = {d: hccn.parse_link(query(tmp_path, d, "link")) for d in range(8)}
    assert [d for d, state in links.items() if state != "UP"] == [5]


def test_emulator_bad_device_is_the_tools_device_id_error(tmp_path):
    emulator_with(tmp_path)
    run = run_tool(tmp_path, "hccn_tool", "-i", "9", "-link", "-g")
    # 910B hccn_tool/cmd.c:501-504 on stderr; UDA_MAJOR_CMD_DEV_ID_ERR 0x1004 (ossl_user_linux.h:80-84) -> exit 4
    assert (run.returncode, run.stdout, run.stderr) == (4, "", "Get invalid device id.\n")
