"""Parsing real hccn_tool / hccn.conf / npu-smi output, and the emulator answering in those formats."""

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

def emulator_with(tmp_path, **device5) -> Emulator:
    emu = load_target("cpu-local").npu.emulator
    devices = copy.deepcopy(emu.devices)
    devices[5] = devices[5].model_copy(update=device5)
    emu = emu.model_copy(update={"devices": devices})
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


def query(tmp_path, device: int, check: str) -> str:
    return run_tool(tmp_path, *hccn.hccn_argv("hccn_tool", device, check)).stdout


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
