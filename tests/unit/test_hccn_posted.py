"""harness/hccn.py's parsers on real output posted publicly (tests/unit/recordings/atlas-posted/, described in
tests/unit/recordings/README.md): `npu-smi info` of Atlas A3 machines (two chips under each NPU number) from
vllm-project/vllm-ascend issues, and a 910B's hccn_tool answers, /etc/hccn.conf and `npu-smi info` from
ArthurChiao's blog. Every expected value was read off the text by hand.

Each file begins with `#` lines naming its source; they are dropped before parsing. Where the search service served
only excerpts of a post, a `# --- gap` line stands between them, and each excerpt is parsed on its own.
"""

from __future__ import annotations

import shlex
from itertools import takewhile
from pathlib import Path

import pytest

from harness import hccn

POSTED = Path(__file__).parent / "recordings" / "atlas-posted"
GAP = "# --- gap"
A3 = "Ascend910"


def parts(name: str) -> list[str]:
    """The file's text without its `#` header, split at the gap lines into the excerpts as posted."""
    lines = (POSTED / name).read_text(encoding="utf-8").splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    found, current = [], []
    for line in lines:
        if line.startswith(GAP):
            found.append("".join(current))
            current = []
        else:
            current.append(line)
    return [*found, "".join(current)]


def text(name: str) -> str:
    (whole,) = parts(name)
    return whole


def header(name: str) -> list[str]:
    lines = (POSTED / name).read_text(encoding="utf-8").splitlines()
    return list(takewhile(lambda line: line.startswith("#"), lines))


def rows(*spec: tuple[int, str, str, int]) -> list[hccn.NpuRow]:
    return [hccn.NpuRow(npu, name, health, chip=chip) for npu, name, health, chip in spec]


def test_every_file_names_its_source_and_the_parsed_text_has_no_header_line():
    names = sorted(p.name for p in POSTED.iterdir())
    assert len(names) == 10
    for name in names:
        head = header(name)
        assert head[0].startswith("# source: ") and head[1].startswith("# read: 2026-12-03")
        for part in parts(name):
            assert part.strip() and not any(line.startswith("#") for line in part.splitlines())


# --- Atlas A3 `npu-smi info` (vllm-ascend issues). Under each NPU number two chips: the first row of each gives the
# NPU number, the name and the Health; the second row's first column is the chip (0 or 1), then the Phy-ID.

def test_a3_2035_npu_smi_24_1_rc3_7():
    head, tail = parts("vllm-ascend-2035-npu-smi-info.txt")
    assert "| npu-smi 24.1.rc3.7               Version: 24.1.rc3.7" in head
    # NPU 0 chip 0 (Phy-ID 0, 0000:9D:00.0), NPU 0 chip 1 (Phy-ID 1, 0000:9F:00.0), NPU 1's first row (its second
    # row, chip 0 / Phy-ID 2, is cut off in the excerpt).
    assert hccn.parse_npu_smi_info(head) == rows((0, A3, "OK", 0), (0, A3, "OK", 1), (1, A3, "OK", 0))
    # The process part lists none: `No running processes found in NPU 1` .. `NPU 7` are not chips.
    assert [n for n in range(1, 8) if f"No running processes found in NPU {n} " in tail] == list(range(1, 8))
    with pytest.raises(hccn.ParseError, match="npu-smi info"):
        hccn.parse_npu_smi_info(tail)


def test_a3_2082_two_npus_four_chips():
    (whole,) = parts("vllm-ascend-2082-npu-smi-info.txt")
    # Second rows read `| 0     0`, `| 1     1`, `| 0     2`, `| 1     3`: chips 0, 1 of NPU 0 and 0, 1 of NPU 1.
    assert hccn.parse_npu_smi_info(whole) == rows((0, A3, "OK", 0), (0, A3, "OK", 1), (1, A3, "OK", 0),
                                                  (1, A3, "OK", 1))


@pytest.mark.parametrize("name", ["vllm-ascend-2534-npu-smi-info.txt", "vllm-ascend-4989-npu-smi-info.txt"])
def test_a3_2534_and_4989_three_chips(name):
    # NPU 0 chips 0 and 1, NPU 1 chip 0 (`| 0     2`, Phy-ID 2); the excerpt ends before NPU 1's chip 1.
    assert hccn.parse_npu_smi_info(text(name)) == rows((0, A3, "OK", 0), (0, A3, "OK", 1), (1, A3, "OK", 0))


def test_a3_12980_npu_smi_26_0_rc2_wider_columns():
    head, tail = parts("vllm-ascend-12980-npu-smi-info.txt")
    assert "| npu-smi 26.0.rc2                            Version: 26.0.rc2" in head
    assert {len(line) for line in (head + tail).splitlines()} == {116}  # 24.1's table is 98 wide
    assert hccn.parse_npu_smi_info(head) == rows((0, A3, "OK", 0), (0, A3, "OK", 1))
    # The tail excerpt: NPU 7's row with Health OK, then the process table with its `Process id in container`
    # column; its row `| 0       0                 | 632268 ...` (NPU 0, chip 0, python3.1) is a process, no chip.
    assert [(r.npu, r.name, r.health) for r in hccn.parse_npu_smi_info(tail)] == [(7, A3, "OK")]


# NPU 7 appears only through its second chip here: the Chip column of its second row says 1.
def test_a3_12980_tail_npu_7_is_chip_1():
    _, tail = parts("vllm-ascend-12980-npu-smi-info.txt")
    assert hccn.parse_npu_smi_info(tail) == rows((7, A3, "OK", 1))


# --- A 910B host (8 x 910B1, Kunpeng 920, on Huawei Cloud) in ArthurChiao's blog, npu-smi 23.0.rc2.

AC = "arthurchiao-910b-"


def test_910b_npu_smi_23_0_rc2():
    whole = text(AC + "npu-smi-info.txt")
    assert "| npu-smi 23.0.rc2                 Version: 23.0.rc2" in whole
    # NPUs 0, 1 and 7 (the blogger elided 2-6 with `...`), one chip each (`| 0    ` under each), all OK.
    assert hccn.parse_npu_smi_info(whole) == rows((0, "910B1", "OK", 0), (1, "910B1", "OK", 0), (7, "910B1", "OK", 0))


def test_910b_lldp_port():
    # `Port ID TLV` / `Ifname: 400GE1/1/20:2`: device 3 is cabled to that switch port.
    assert hccn.parse_lldp_ifname(text(AC + "lldp.txt")) == "400GE1/1/20:2"


def test_910b_ip():
    assert hccn.parse_ip(text(AC + "ip.txt")) == hccn.IpConf("29.1.112.213", "255.255.0.0")


def test_910b_ping():
    # `device 3 PING 29.1.137.205`, replies seq 0, 1, 2, `3 packets transmitted, 3 received, 0.00% packet loss`.
    assert hccn.parse_ping(text(AC + "ping.txt")) == hccn.Ping(3, 3, "0.00%", 0)


def test_910b_hccn_conf():
    posted = text(AC + "hccn.conf")
    # As posted, line 6 is the blogger's `...` standing for devices 1-6: no hccn.conf line, and the parser says so.
    with pytest.raises(hccn.ParseError, match=r"hccn.conf line 6.*'\.\.\.'"):
        hccn.parse_hccn_conf(posted)
    conf = hccn.parse_hccn_conf(posted.replace("\n...\n", "\n"))
    assert conf == {
        0: {"address": "29.1.137.205", "netmask": "255.255.0.0", "netdetect": "29.1.0.1", "gateway": "29.1.0.1",
            "send_arp_status": "1"},
        7: {"address": "29.1.170.143", "netmask": "255.255.0.0", "netdetect": "29.1.0.1", "gateway": "29.1.0.1",
            "send_arp_status": "1"},
    }


@pytest.mark.parametrize("name,argv", [
    ("lldp.txt", hccn.hccn_argv("hccn_tool", 3, "lldp")),
    ("ip.txt", hccn.hccn_argv("hccn_tool", 3, "ip")),
    ("ping.txt", hccn.ping_argv("hccn_tool", 3, "29.1.137.205")),
])
def test_910b_commands_as_posted_are_the_suites(name, argv):
    # The header keeps the posted command line (`$  hccn_tool -i 3 -lldp -g # ...`): the suite asks the same.
    line = next(x for x in header(AC + name) if x.startswith("# command line as posted: $ "))
    assert shlex.split(line.split(": $ ", 1)[1], comments=True) == argv
