"""Parse hccn_tool, /etc/hccn.conf and npu-smi output (real formats) into typed results.

Each parser takes the tool's text and returns a value or raises ParseError quoting the text,
so a check can say "expected UP, got DOWN" or "hccn_tool printed something we do not understand".

The authority is the published driver source, github.com/hicann/driver at SOURCE_COMMIT (read 2026-12):
`src/custom/network/hccn/ascend910B/` is the hccn_tool of the Atlas A2 and A3 (910B, 910_93; unchanged since the
2026-06-26 sync), `src/custom/network/hccn/ascend950/` the newer 950 generation's, and
`src/custom/dev_prod/user/npucli/` npu-smi. hccn_tool prints results with TOOL_PRINT_INFO / DSMI_PRINT_INFO (stdout)
and errors with TOOL_PRINT_ERR (stderr, ascend910B/hccn_tool/ossl_user_linux.h:297-313); main returns its error
code, so the exit status is that code's low byte (hccn_tool/main.c:41-66). The unit tests cite file and line of
each spelling (tests/unit/test_hccn.py).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

SOURCE = "github.com/hicann/driver"
SOURCE_COMMIT = "ef377e950a32b1641c108c59481e39e9643b7d63"

# `-net_health -g` prints one of these (ascend910B/hccn_tool/tool_ops.c:36-47, the same table in
# ascend950/hccn_tool/tool_tcpip_ops.c:199-210). The driver's DCMI docs: Init = "the detection task is being
# initialized", Success = "the network health status is normal" (docs/en/Ascend_910B_DCMI_API/.../
# dcmi_get_device_network_health.md).
NET_HEALTH_STATES = (
    "Success", "Socket fail", "Receive timeout", "Unreachable", "Time exceeded",
    "Fault", "Init", "Thread error", "Detect ip set", "Unknown",
)
# npu-smi's Health column (npucli/src/npu_common.c:1548).
NPU_HEALTH_STATES = ("OK", "Warning", "Alarm", "Critical", "UNKNOWN")

# The hccn_tool query of each check, as the seed runs it (`hccn_tool -i N <flag> -g`).
QUERIES = {
    "lldp": "-lldp", "link": "-link", "net_health": "-net_health",
    "netdetect": "-netdetect", "gateway": "-gateway", "ip": "-ip",
}
# Asked as well when the target has several nodes: the TLS switch, which must agree across them.
NODE_QUERIES = {"tls": "-tls"}


class ParseError(ValueError):
    def __init__(self, what: str, text: str):
        shown = text.strip().replace("\n", "\\n")
        super().__init__(f"unexpected {what} output: {shown[:300]!r}")


@dataclass(frozen=True)
class IpConf:
    ip: str | None  # None: the tool says no IP was preset
    netmask: str | None


@dataclass(frozen=True)
class Gateway:
    address: str | None  # None: the tool says no gateway was preset
    iface: str | None  # the 950 generation prints no Iface


@dataclass(frozen=True)
class NpuRow:
    npu: int
    name: str
    health: str
    chip: int = 0  # an A3 lists two chips under each NPU's number, each with its own Health


_IP = r"\d{1,3}(?:\.\d{1,3}){3}"


def hccn_argv(tool: str, device: int, check: str) -> list[str]:
    return [tool, "-i", str(device), {**QUERIES, **NODE_QUERIES}[check], "-g"]


def stage_checks(multi_node: bool) -> list[str]:
    """The checks stage 1 asks every device: QUERIES, and NODE_QUERIES too on several nodes."""
    return list(QUERIES) + (list(NODE_QUERIES) if multi_node else [])


def npu_smi_argv(npu_smi: str) -> list[str]:
    """`npu-smi info`: one table with every NPU's health."""
    return [npu_smi, "info"]


@dataclass(frozen=True)
class Answer:
    rc: int
    stdout: str
    stderr: str


_MARK = "@@kvpool-answer"


def batch_script(tool: str, devices: list[int], checks: list[str]) -> str:
    """One shell script that asks every device every check, one after the other as the seed's commands do, and
    prints each answer framed by marks: one `docker exec` for the whole stage instead of one per test."""
    return batch_of([(device, check, hccn_argv(tool, device, check)) for device in devices for check in checks])


def ping_argv(tool: str, device: int, address: str) -> list[str]:
    """The successor guide's cross-node check: `hccn_tool -i N -ping -g address <peer NPU IP>`."""
    return [tool, "-i", str(device), "-ping", "-g", "address", address]


def batch_of(commands: list[tuple[int, str, list[str]]]) -> str:
    """The script that runs each (device, check, argv) in turn and frames its answer (parse_batch reads them)."""
    lines = ['t=$(mktemp -d) || exit 1', 'trap \'rm -rf "$t"\' EXIT']
    for device, check, argv in commands:
        cmd = " ".join(shlex.quote(a) for a in argv)
        lines.append(f'{cmd} >"$t/o" 2>"$t/e"; echo "{_MARK} {device} {check} $?"; cat "$t/o"; echo; '
                     f'echo "{_MARK}-stderr"; cat "$t/e"; echo; echo "{_MARK}-end"')
    return "\n".join(lines) + "\n"


def parse_batch(text: str) -> dict[tuple[int, str], Answer]:
    """batch_script's output -> {(device, check): Answer}."""
    found = re.finditer(rf"^{_MARK} (\d+) (\w+) (\d+)\n(.*?)\n{_MARK}-stderr\n(.*?)\n{_MARK}-end$", text, re.M | re.S)
    return {(int(m[1]), m[2]): Answer(int(m[3]), m[4], m[5]) for m in found}


# "Get ipconf failed, because no ip was preset there!" (exit 13) and "Get gateway failed, because no gateway was
# preset there!" (exit 2) on stderr: ascend910B/hccn_tool/cmd.c:670-675; the 950's "Get ip failed, ..." (exit 6)
# and the same gateway line (exit 5): ascend950/hccn_tool/tool_cmd_err.c:266-272.
_NOT_PRESET = re.compile(r"because no (ip|gateway) was preset")


def readable(answer: Answer) -> str | None:
    """The text of an answer a parser reads: its stdout; when the tool failed with nothing on stdout, its stderr if
    that is one of the driver's "not preset" answers; None when the tool failed otherwise."""
    if answer.rc == 0 or answer.stdout.strip():
        return answer.stdout
    return answer.stderr if _NOT_PRESET.search(answer.stderr) else None


def parse_ip(text: str) -> IpConf:
    m = _NOT_PRESET.search(text)
    if m and m.group(1) == "ip":
        return IpConf(None, None)
    ip = re.search(rf"^\s*ipaddr\s*:\s*({_IP})\s*$", text, re.M)
    mask = re.search(rf"^\s*netmask\s*:\s*({_IP})\s*$", text, re.M)
    if not ip:
        raise ParseError("hccn_tool -ip -g", text)
    return IpConf(ip.group(1), mask.group(1) if mask else None)


def parse_link(text: str) -> str:
    m = re.search(r"link status\s*:\s*(\w+)", text)
    if not m:
        raise ParseError("hccn_tool -link -g", text)
    return m.group(1)


def parse_net_health(text: str) -> str:
    m = re.search(r"net health status\s*:\s*(.+?)\s*$", text, re.M)
    if not m or m.group(1) not in NET_HEALTH_STATES:
        raise ParseError("hccn_tool -net_health -g", text)
    return m.group(1)


def parse_lldp_ifname(text: str) -> str | None:
    """The switch port this NPU is cabled to (Port ID TLV), or None when no neighbour is reported."""
    m = re.search(r"^\s*Ifname\s*:\s*(\S+)\s*$", text, re.M)
    return m.group(1) if m else None


def parse_netdetect(text: str) -> str:
    """`netdetect addr: %s` (both generations' source); `netdetect address:` as MindIE's docs quote it."""
    m = re.search(rf"netdetect addr(?:ess)?\s*:\s*({_IP})", text)
    if not m:
        raise ParseError("hccn_tool -netdetect -g", text)
    return m.group(1)


def parse_gateway(text: str) -> Gateway:
    """`default gateway:%s, Iface:eth%d` (910B), `default gateway:%s` (950), or the stderr line "... no gateway was
    preset there!" -> Gateway(None, None)."""
    m = _NOT_PRESET.search(text)
    if m and m.group(1) == "gateway":
        return Gateway(None, None)
    m = re.search(rf"default gateway\s*:\s*({_IP})(?:\s*,\s*Iface\s*:\s*(\S+))?", text)
    if not m:
        raise ParseError("hccn_tool -gateway -g", text)
    return Gateway(m.group(1), m.group(2))


def parse_hccn_conf(text: str) -> dict[int, dict[str, str]]:
    """hccn.conf -> {device: {key: value}}; comments and blanks skipped.

    hccn_tool writes each setting as `%s_%d=%s` (name, device, value: ascend910B/hccn_tool/cfg.c:345, :124). Names
    have upper case and digits (`IPv6address`, `IPv6netmask`, `IPv6gateway`, `udhcpc_ipv6_enable`); some carry
    addresses (`route_address_%s_netmask_%s_%d=gateway_...`, hccn_tool/tool.c:1001; `IPv6route_address_%s/%u_%d=`,
    hccn_product_ext/tool_ipv6.c:583) and some values have spaces (`arp_%d=-i eth0 -s IP MAC`, hccn_tool/tool.c:218,
    :455). The device is the number after the last `_` before the first `=`."""
    devices: dict[int, dict[str, str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([^=\s]+)_(\d+)\s*=(.*)", line)
        if not m:
            raise ParseError(f"hccn.conf line {n}", line)
        devices.setdefault(int(m.group(2)), {})[m.group(1)] = m.group(3).strip()
    return devices


_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]$")


def _npu_rows(text: str) -> list[tuple[int, str, str, int | None]]:
    """(npu, name, health, chip) of each chip's first row, in order. npu-smi's layouts (npucli/src/npu_info_print.c):
    910B and 910_93 `| %-5d %-20s| %-13s |` (:438; an A3's second chip :417), the 950's `| %-7d| %-17s| %-13s |`
    (:428). The chip number is the second row's first number (`| %-26d|`, `| %-5d %-20u|`: :397-399, before the
    Bus-Id); None where no such row follows. Process rows have a number where the name is and no Bus-Id."""
    rows: list[tuple[int, str, str, int | None]] = []
    numbered = True  # the last chip row has its chip number, or there is none: no second row is expected
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        head = cells[0].split()
        if len(cells) >= 3 and len(head) == 2 and head[0].isdigit() and not head[1].isdigit():
            rows.append((int(head[0]), head[1], cells[1], None))
            numbered = False
        elif len(cells) >= 3 and len(head) == 1 and head[0].isdigit() and cells[1] \
                and not cells[1].split()[0].isdigit() and cells[2] in NPU_HEALTH_STATES:
            rows.append((int(head[0]), cells[1], cells[2], None))
            numbered = False
        elif not numbered and len(cells) >= 2 and head and head[0].isdigit() and _BUS_ID.match(cells[1]):
            rows[-1] = (*rows[-1][:3], int(head[0]))
            numbered = True
        else:
            numbered = True
    return rows


def parse_npu_smi_info(text: str) -> list[NpuRow]:
    """Each chip's first row in `npu-smi info`: `| 0     910B4   | OK   | power temp ... |`. An NPU with several chips
    (an A3: two, each listed under the NPU's number) gives one NpuRow per chip, numbered as its second row says (in
    order where it says nothing). Two rows of one NPU and chip are refused: one chip's health would hide another's."""
    rows: list[NpuRow] = []
    for npu, name, health, chip in _npu_rows(text):
        row = NpuRow(npu, name, health, chip=sum(r.npu == npu for r in rows) if chip is None else chip)
        if any((r.npu, r.chip) == (row.npu, row.chip) for r in rows):
            raise ParseError(f"npu-smi info (NPU {npu} chip {row.chip} listed twice)", text)
        rows.append(row)
    if not rows:
        raise ParseError("npu-smi info", text)
    return rows


@dataclass(frozen=True)
class Ping:
    transmitted: int
    received: int
    loss: str  # as printed, e.g. "0.00%"
    timeouts: int  # `recv time out seq=N` lines


def parse_ping(text: str) -> Ping:
    """`hccn_tool -i N -ping -g address IP`: a `device N PING IP` header, a `recv seq=K,time=T ms` line per reply or
    `recv time out seq=K` per lost probe, and `3 packets transmitted, 3 received, 0.00% packet loss` (quoted in
    Ascend's MindIE and HIXL docs). The driver prints `device %d PING %s` and the device's own text after it
    (ascend910B/hccn_product_ext/ds_net_ext.c:835); a lost probe there ends it with exit 1 and `Command execute
    failed!` on stderr (:838-841), no summary, so the probe lines are counted then. The driver's own pings spell
    them `recv seq:%u,time:...` and `recv time out seq:%u` (dsmi/ascend950/dsmi_ubping.c:74, :86) and `packets
    loss` (hccn_product_ext/tool_cmd.c:897): accepted too."""
    timeouts = len(re.findall(r"recv time out seq", text))
    m = re.search(r"(\d+)\s+packets? transmitted,\s*(\d+)\s+received,\s*([\d.]+%)\s+packets? loss", text)
    if m:
        return Ping(int(m.group(1)), int(m.group(2)), m.group(3), timeouts)
    replies = len(re.findall(r"recv seq\s*[=:]\s*\d+\s*,\s*time", text))
    if not replies + timeouts:
        raise ParseError("hccn_tool -ping -g", text)
    sent = replies + timeouts
    return Ping(sent, replies, f"{100 * timeouts / sent:.2f}%", timeouts)


def parse_tls_switch(text: str) -> int:
    """`hccn_tool -i N -tls -g`: `dev_id:0, tls switch[0](0:disable, 1:enable), ...` -> 0 (ascend910B/hccn_tool/
    tool_tls.c:170; the 950 begins `device 0, tls switch[...]`, ascend950/hccn_tool/tool_tls.c:274)."""
    m = re.search(r"tls switch\s*\[(\d)\]", text)
    if not m:
        raise ParseError("hccn_tool -tls -g", text)
    return int(m.group(1))
