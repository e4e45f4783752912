#!/usr/bin/python3
"""NPU emulator for the cpu-local target: answers `hccn_tool` and `npu-smi` in their real formats.

Installed once in the image and linked as /usr/local/Ascend/driver/tools/hccn_tool and
/usr/local/bin/npu-smi; which tool it is comes from the name it was called by. Every answer comes
from a state file written by the suite at run time from the target YAML (`npu.emulator`), so a fault
such as "device 5 link DOWN" is a YAML change, never an image rebuild. Standard library only.
"""

import json
import os
import sys

STATE = os.environ.get("NPU_EMULATOR_STATE", "/etc/npu-emulator/state.json")


def load_state():
    try:
        with open(STATE) as f:
            return json.load(f)
    except FileNotFoundError:
        sys.exit(f"npu-emulator: no state file at {STATE} (the suite writes it from the target's npu.emulator)")


# What each driver generation prints, from the published driver source (github.com/hicann/driver at ef377e9,
# src/custom/network/hccn/): results go to stdout, errors to stderr, and the exit status is the low byte of the
# tool's error code (ascend910B/hccn_tool/main.c; ascend950/hccn_tool/main.c). "mindie-doc" is ascend910b with the
# older `netdetect address:` that MindIE's docs quote (no source of that driver is published).
DRIVERS = {
    "ascend910b": {  # ascend910B/hccn_tool: tool_ops.c:1149, tool_ops_ext.c:856, tool_tls.c:170, cmd.c:670-675
        "netdetect": "netdetect addr: {address}",
        "gateway": "default gateway:{gateway}, Iface:eth{dev_id}",
        "tls": "dev_id:{dev_id}, tls switch",
        "no_ip": ("Get ipconf failed, because no ip was preset there!", 0x400D & 0xFF),  # UDA_DSMI_IPCONF_NOT_PRESET
        "no_gateway": ("Get gateway failed, because no gateway was preset there!", 0x4002 & 0xFF),
    },
    "ascend950": {  # ascend950/hccn_tool: tool_tcpip_ops.c:290, tool_shell_ops.c:1243, tool_tls.c:274,
        "netdetect": "netdetect addr: {address}",  # tool_cmd_err.c:266-272, common/hccn_err.h:55-61
        "gateway": "default gateway:{gateway}",
        "tls": "device {dev_id}, tls switch",
        "no_ip": ("Get ip failed, because no ip was preset there!", 0x3106 & 0xFF),
        "no_gateway": ("Get gateway failed, because no gateway was preset there!", 0x3105 & 0xFF),
    },
}
DRIVERS["mindie-doc"] = {**DRIVERS["ascend910b"], "netdetect": "netdetect address: {address}"}


def fail(message, code):
    print(message, file=sys.stderr)
    return code


def device(state, dev_id):
    dev = state["devices"].get(str(dev_id))
    if dev is None:  # the 910B tool's device-id error (ascend910B/hccn_tool/cmd.c:501-504), UDA_MAJOR_CMD_DEV_ID_ERR
        sys.exit(fail("Get invalid device id.", 0x1004 & 0xFF))
    return dev


def lldp(dev):
    if not dev.get("ifname"):
        return ""  # no neighbour: nothing to report, as the real tool prints no TLVs
    return "\n".join([
        "Chassis ID TLV", "\tMAC: 3c:c7:86:f1:a2:01",
        "Port ID TLV", f"\tIfname: {dev['ifname']}",
        "Time to Live TLV", "\tTTL: 120",
        "System Name TLV", "\temulated-leaf",
        "System Description TLV", "\tHuawei Versatile Routing Platform Software (emulated)",
        "Management Address TLV", f"\tIPv4: {dev.get('gateway') or '0.0.0.0'}",
        "End of LLDPDU TLV", "",
    ])


def ping(dev_id, dev, address):
    """`-ping -g address IP`: three probes; a reply unless the link is down or the YAML cuts that address off. A lost
    probe ends as the driver's source does (ascend910B/hccn_product_ext/ds_net_ext.c:835-841): the probe lines, then
    `Command execute failed!` on stderr, exit 1 (no summary is quoted)."""
    print(f"device {dev_id} PING {address}")
    if dev["link"] == "UP" and address not in dev.get("unreachable", []):
        print("recv seq=0,time=0.067000ms\nrecv seq=1,time=0.049000ms\nrecv seq=2,time=0.047000ms\n"
              "3 packets transmitted, 3 received, 0.00% packet loss")
        return 0
    print("recv time out seq=0\nrecv time out seq=1\nrecv time out seq=2")
    return fail("Command execute failed!", 1)


def hccn_tool(argv):
    usage = ("usage: hccn_tool -i <device_id> -{ip|link|net_health|lldp|netdetect|gateway|tls} -g\n"
             "       hccn_tool -i <device_id> -ping -g address <ip>")
    if len(argv) == 6 and argv[0] == "-i" and argv[1].isdigit() and argv[2:5] == ["-ping", "-g", "address"]:
        return ping(int(argv[1]), device(load_state(), int(argv[1])), argv[5])
    if len(argv) != 4 or argv[0] != "-i" or argv[3] != "-g" or not argv[1].isdigit():
        return fail(usage, 1)
    dev_id, what = int(argv[1]), argv[2]
    state = load_state()
    dev = device(state, dev_id)
    say = DRIVERS[state.get("driver", "ascend910b")]
    if what == "-ip":
        if not dev.get("ip"):
            return fail(*say["no_ip"])
        print(f"ipaddr:{dev['ip']}\nnetmask:{dev['netmask']}")
    elif what == "-link":
        print(f"link status: {dev['link']}")
    elif what == "-net_health":
        print(f"net health status: {dev['net_health']}")
    elif what == "-lldp":
        print(lldp(dev), end="")
    elif what == "-netdetect":
        print(say["netdetect"].format(address=dev.get("netdetect") or "0.0.0.0"))
    elif what == "-gateway":
        if not dev.get("gateway"):
            return fail(*say["no_gateway"])
        print(say["gateway"].format(gateway=dev["gateway"], dev_id=dev_id))
    elif what == "-tls":
        print(say["tls"].format(dev_id=dev_id) + f"[{dev.get('tls_switch', 0)}](0:disable, 1:enable), "
              "tls preconfigured[1](0:non-preset, 1:preset), tls alarm time threshold[60]days")
    else:
        return fail(usage, 1)
    return 0


def npu_smi(argv):
    if argv != ["info"]:
        print("usage: npu-smi info", file=sys.stderr)
        return 1
    state = load_state()
    sep = "+---------------------------+---------------+----------------------------------------------------+"
    rule = "+===========================+===============+====================================================+"
    lines = [
        "+------------------------------------------------------------------------------------------------+",
        "| npu-smi 24.1.rc2 (emulated)      Version: 24.1.rc2                                             |",
        sep,
        "| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|",
        "| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |",
        rule,
    ]
    for key in sorted(state["devices"], key=int):
        dev = state["devices"][key]
        lines.append(f"| {key:<5} {state['chip']:<19} | {dev['health']:<13} | "
                     f"{'93.6':<11} {'37':<17} {'0    / 0':<21}|")
        lines.append(f"| {'0':<25} | {f'0000:{0xC1 + int(key):02X}:00.0':<13} | "
                     f"{'0':<11} {'0    / 0':<17} {'3400 / 65536':<21}|")
        lines.append(rule)
    print("\n".join(lines))
    return 0


def main():
    tool = os.path.basename(sys.argv[0])
    if tool == "npu-smi":
        return npu_smi(sys.argv[1:])
    if tool == "hccn_tool":
        return hccn_tool(sys.argv[1:])
    print(f"npu-emulator: call me as hccn_tool or npu-smi, not {tool}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
