"""Parse hccn_tool, /etc/hccn.conf and npu-smi output (real formats) into typed results.

Each parser takes the tool's text and returns a value or raises ParseError quoting the text,
so a check can say "expected UP, got DOWN" or "hccn_tool printed something we do not understand".
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

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
    address: str
    iface: str | None


@dataclass(frozen=True)
class NpuRow:
    npu: int
    name: str
    health: str


_IP = r"\d{1,3}(?:\.\d{1,3}){3}"


def hccn_argv(tool: str, device: int, check: str) -> list[str]:
    return [tool, "-i", str(device), {**QUERIES, **NODE_QUERIES}[check], "-g"]


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


def parse_ip(text: str) -> IpConf:
    if "no ip was preset" in text:
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
    if not m:
        raise ParseError("hccn_tool -net_health -g", text)
    return m.group(1)


def parse_lldp_ifname(text: str) -> str | None:
    """The switch port this NPU is cabled to (Port ID TLV), or None when no neighbour is reported."""
    m = re.search(r"^\s*Ifname\s*:\s*(\S+)\s*$", text, re.M)
    return m.group(1) if m else None


def parse_netdetect(text: str) -> str:
    m = re.search(rf"netdetect address\s*:\s*({_IP})", text)
    if not m:
        raise ParseError("hccn_tool -netdetect -g", text)
    return m.group(1)


def parse_gateway(text: str) -> Gateway:
    m = re.search(rf"default gateway\s*:\s*({_IP})(?:\s*,\s*Iface\s*:\s*(\S+))?", text)
    if not m:
        raise ParseError("hccn_tool -gateway -g", text)
    return Gateway(m.group(1), m.group(2))


def parse_hccn_conf(text: str) -> dict[int, dict[str, str]]:
    """`address_0=10.0.0.1` lines -> {0: {"address": "10.0.0.1", ...}}; comments and blanks skipped."""
    devices: dict[int, dict[str, str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-z_]+?)_(\d+)\s*=\s*(\S*)", line)
        if not m:
            raise ParseError(f"hccn.conf line {n}", line)
        devices.setdefault(int(m.group(2)), {})[m.group(1)] = m.group(3)
    return devices


def parse_npu_smi_info(text: str) -> list[NpuRow]:
    """The first row of each NPU in `npu-smi info`: `| 0     910B4   | OK   | power temp ... |`."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3:
            continue
        head = cells[0].split()
        # Second rows ("| 0  0 | 0000:C1:00.0 |") and process rows have a number where the name is.
        if len(head) == 2 and head[0].isdigit() and not head[1].isdigit():
            rows.append(NpuRow(int(head[0]), head[1], cells[1]))
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
    Ascend's MindIE and HIXL docs). When a probe is lost the driver may end with `Command execute failed!` and no
    summary (its source, ds_net_ext.c), so the probe lines are counted then."""
    timeouts = len(re.findall(r"recv time out seq", text))
    m = re.search(r"(\d+)\s+packets? transmitted,\s*(\d+)\s+received,\s*([\d.]+%)\s+packet loss", text)
    if m:
        return Ping(int(m.group(1)), int(m.group(2)), m.group(3), timeouts)
    replies = len(re.findall(r"recv seq\s*=\s*\d+\s*,\s*time", text))
    if not replies + timeouts:
        raise ParseError("hccn_tool -ping -g", text)
    sent = replies + timeouts
    return Ping(sent, replies, f"{100 * timeouts / sent:.2f}%", timeouts)


def parse_tls_switch(text: str) -> int:
    """`hccn_tool -i N -tls -g`: `dev_id:0, tls switch[0](0:disable, 1:enable), ...` -> 0."""
    m = re.search(r"tls switch\s*\[(\d)\]", text)
    if not m:
        raise ParseError("hccn_tool -tls -g", text)
    return int(m.group(1))
