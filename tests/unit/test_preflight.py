"""commands/preflight.py: each check green and red on a fake host tree (tmp_path as root) and a fake Docker.

No Docker, no NPU: the Docker-backed checks (image present, Mooncake importable) see a fake client here; the lead's
self-test runs them against stand-in images.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from commands import preflight
from commands.preflight import Finding, run_preflight
from harness.config import Target, load_target

GiB = 1 << 30
ATLAS = load_target("atlas-800t-a2")
CPU = load_target("cpu-local")
# The seed's image has no Mooncake, so atlas-800t-a2 derives one (container.derive); a site's image may have it.
PLAIN = ATLAS.model_copy(update={"container": ATLAS.container.model_copy(update={"derive": None})})

# Real /usr/local/Ascend/driver/version.info texts, as published (public GitHub markdown found with the code search):
# - 25.0.rc1.1: an Atlas 800I A2 (Ascend 910B4, Kunpeng 920, openEuler 22.03 aarch64) deployment note for MindIE
#   2.1.RC1, "### NPU Driver / /usr/local/Ascend/driver# cat version.info".
# - 24.1.rc2.2: version notes of the image MindIE 2.0.T3.1-800I-A2-py311-openeuler24.03-lts on an aarch64 host,
#   "# cat /usr/local/Ascend/driver/version.info".
# - 25.3.rc1: PyPTO's troubleshooting page "CANN包不兼容" (driver 25.2.0 or later needed), quoted indented by 4.
# - 24.1.rc1: an Ascend install guide's "查询驱动版本号: cat /usr/local/Ascend/driver/version.info" (older format:
#   no package_version line).
VERSION_INFO_25_0_RC1_1 = """\
Version=25.0.rc1.1
ascendhal_version=7.35.23
aicpu_version=1.0
tdt_version=1.0
log_version=1.0
prof_version=2.0
dvppkernels_version=1.1
tsfw_version=1.0
Innerversion=V100R001C21SPC002B220
compatible_version=[V100R001C17],[V100R001C18],[V100R001C19],[V100R001C20],[V100R001C21]
compatible_version_fw=[7.0.0,7.7.99]
package_version=25.0.rc1.1
"""
VERSION_INFO_24_1_RC2_2 = """\
Version=24.1.rc2.2
ascendhal_version=7.35.23
aicpu_version=1.0
tdt_version=1.0
log_version=1.0
prof_version=2.0
dvppkernels_version=1.1
tsfw_version=1.0
Innerversion=V100R001C18SPC001B233
compatible_version=[V100R001C30],[V100R001C13],[V100R001C15],[V100R001C17],[V100R001C18]
compatible_version_fw=[7.0.0,7.2.99]
package_version=24.1.rc2.2
"""
VERSION_INFO_25_3_RC1 = """\
    Version=25.3.rc1
    ascendhal_version=7.35.23
    aicpu_version=1.0
    tdt_version=1.0
    log_version=1.0
    prof_version=2.0
    dvppkernels_version=1.1
    tsfw_version=1.0
    Innerversion=V100R001C23SPC002B212
    compatible_version=[V100R001C19],[V100R001C20],[V100R001C21],[V100R001C22],[V100R001C23]
    compatible_version_fw=[7.0.0,8.9.9]
    package_version=25.3.rc1
"""
VERSION_INFO_24_1_RC1 = """\
Version=24.1.rc1
ascendhal_version=7.35.19
aicpu_version=1.0
tdt_version=1.0
log_version=1.0
prof_version=2.0
dvppkernels_version=1.1
tsfw_version=1.0
Innerversion=V100R001C15SPC006B220
compatible_version=[V100R001C30],[V100R001C13],[V100R001C15],[V100R001C17]
compatible_version_fw=[7.0.0,7.2.99]
"""
# No public 25.5 text was found: the recorded 25.3.rc1 file with its two version lines set to 25.5.0.
VERSION_INFO_25_5_0 = VERSION_INFO_25_3_RC1.replace("25.3.rc1", "25.5.0")

# This machine's /proc files, recorded 2026-12 (a CI run of cpu-local was up: 127.0.0.1:8002 listens, 0x1F42).
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:ACA5 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 499971 1 00000000b5a8e929 100 0 0 10 0
  26: 0100007F:1F42 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 499302 1 00000000f7c9b132 100 0 0 10 0
  33: 0100007F:1F42 0100007F:C96E 01 00000000:00000000 00:00000000 00000000     0        0 503768 1 00000000e3764478 20 4 29 18 -1
   9: 00000000:3AD9 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 499344 1 000000004516402f 100 0 0 10 0
"""  # noqa: E501 - recorded lines, verbatim
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:3FA8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 499519 1 00000000ebf63000 100 0 0 10 0
"""  # noqa: E501 - recorded lines, verbatim
MEMINFO = "MemTotal:       24683664 kB\nMemFree:        15977308 kB\nMemAvailable:   18465496 kB\n"


def edited(base: Target, edit) -> Target:
    data = base.model_dump()
    edit(data)
    return Target.model_validate(data)


def write(root: Path, path: str, text: str = "") -> Path:
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


class FakeDocker:
    def __init__(self, images=(), run=(0, "/usr/local/python3.11/site-packages/mooncake/__init__.py\n"), down=False):
        self.images, self.run, self.down, self.calls = set(images), run, down, []

    def ping(self) -> str:
        if self.down:
            raise ConnectionError("Error while fetching server API version: FileNotFoundError(2)")
        return "Docker 26.1.5 answers"

    def has_image(self, ref: str) -> bool:
        return ref in self.images

    def image_id(self, ref: str) -> str:
        assert ref in self.images
        return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()

    def run_python(self, image, code, *, env, volumes, timeout):
        self.calls.append({"image": image, "code": code, "env": env, "volumes": volumes, "timeout": timeout})
        return self.run


def test_architecture():
    assert preflight.check_architecture("aarch64").status == "ok"
    assert preflight.check_architecture("x86_64").status == "ok"
    f = preflight.check_architecture("armv7l")
    assert f.status == "problem" and "armv7l" in f.seen and "aarch64" in f.fix


@pytest.mark.parametrize("version,status", [((3, 9, 18), "ok"), ((3, 13, 1), "ok"), ((3, 8, 10), "problem"),
                                            ((3, 14, 0), "problem")])
def test_python(version, status):
    f = preflight.check_python(version)
    assert f.status == status and f.seen.startswith(".".join(map(str, version)))


def test_docker_answers_or_not():
    assert preflight.check_docker(FakeDocker()) == Finding("docker", "ok", "Docker 26.1.5 answers")
    f = preflight.check_docker(FakeDocker(down=True))
    assert f.status == "problem" and "FileNotFoundError" in f.seen and "dockerd" in f.fix


def test_npu_devices(tmp_path):
    f = preflight.check_devices(ATLAS, tmp_path)
    assert f.status == "problem" and f.seen.startswith("11 of 11 missing: /dev/davinci0")
    for d in ATLAS.container.devices:
        write(tmp_path, d)
    assert preflight.check_devices(ATLAS, tmp_path).status == "ok"
    (tmp_path / "dev" / "hisi_hdc").unlink()
    f = preflight.check_devices(ATLAS, tmp_path)
    assert f.status == "problem" and f.seen == "1 of 11 missing: /dev/hisi_hdc"


def test_npu_devices_of_cpu_local_are_its_own(tmp_path):
    """cpu-local maps /dev/null to each davinci name: its host side is what must exist."""
    assert preflight.check_devices(CPU, tmp_path).status == "problem"
    write(tmp_path, "/dev/null")
    f = preflight.check_devices(CPU, tmp_path)
    assert f.status == "ok" and "/dev/null" in f.seen


@pytest.mark.parametrize("text,version", [
    (VERSION_INFO_25_0_RC1_1, "25.0.rc1.1"), (VERSION_INFO_24_1_RC2_2, "24.1.rc2.2"),
    (VERSION_INFO_25_3_RC1, "25.3.rc1"), (VERSION_INFO_24_1_RC1, "24.1.rc1"),
    ("package_version=26.0.rc1\n", "26.0.rc1"), ("ascendhal_version=7.35.23\n", None)])
def test_driver_version_of_recorded_files(text, version):
    assert preflight.driver_version(text) == version


def test_version_order():
    key = preflight.version_key
    assert key("24.1.rc1") < key("24.1.rc2.2") < key("25.0.rc1.1") < key("25.3.rc1") < key("25.5.rc1") < key("25.5.0")
    assert key("25.5.0") == key("25.5") < key("25.5.2") < key("26.0.rc1")
    assert key("V100R001C15") is None


def _with_driver(root: Path, text: str) -> None:
    write(root, preflight.DRIVER_VERSION_INFO, text)


@pytest.mark.parametrize("text", [VERSION_INFO_24_1_RC2_2, VERSION_INFO_25_3_RC1, VERSION_INFO_24_1_RC1])
def test_driver_older_than_25_5_with_a_100_gib_segment(tmp_path, text):
    _with_driver(tmp_path, text)
    f = preflight.check_driver(ATLAS, tmp_path)
    version = preflight.driver_version(text)
    assert f.status == "problem"
    assert f"driver {version}" in f.seen and "25.5.0" in f.seen and "100 GiB (107374182400)" in f.seen
    assert "Mooncake issue 3791" in f.seen and "34359738368" in f.fix


def test_driver_25_5_holds_any_segment(tmp_path):
    _with_driver(tmp_path, VERSION_INFO_25_5_0)
    f = preflight.check_driver(ATLAS, tmp_path)
    assert f.status == "ok" and f.seen.startswith("25.5.0")


def test_driver_older_with_segments_up_to_32_gib(tmp_path):
    _with_driver(tmp_path, VERSION_INFO_24_1_RC2_2)
    at_limit = edited(ATLAS, lambda d: d["mooncake"]["config"].update(global_segment_size=32 * GiB))
    assert preflight.check_driver(at_limit, tmp_path).status == "ok"
    over = edited(ATLAS, lambda d: d["mooncake"]["config"].update(global_segment_size=32 * GiB + 1))
    assert preflight.check_driver(over, tmp_path).status == "problem"


def test_driver_rule_is_for_the_ascend_protocol(tmp_path):
    """Issue 3791 is device RoCE registering host memory (protocol ascend); over TCP nothing is registered there."""
    _with_driver(tmp_path, VERSION_INFO_24_1_RC2_2)
    tcp = edited(ATLAS, lambda d: d["mooncake"]["config"].update(protocol="tcp"))
    assert preflight.check_driver(tcp, tmp_path).status == "ok"


def test_driver_missing_or_unreadable(tmp_path):
    f = preflight.check_driver(ATLAS, tmp_path)
    assert f.status == "problem" and f.seen == "no /usr/local/Ascend/driver/version.info"
    _with_driver(tmp_path, "ascendhal_version=7.35.23\n")
    f = preflight.check_driver(ATLAS, tmp_path)
    assert f.status == "problem" and "no readable Version= line" in f.seen


def test_driver_not_used_by_emulated_npus(tmp_path):
    f = preflight.check_driver(CPU, tmp_path)
    assert f.status == "skip" and "npu.emulator" in f.seen


def test_npu_tools_at_their_host_side(tmp_path):
    """checks_in container: the volume's host side; the seed mounts each at the same path."""
    assert [f.status for f in preflight.check_tools(ATLAS, tmp_path)] == ["problem"] * 3
    for path in ("/usr/local/Ascend/driver/tools/hccn_tool", "/usr/local/bin/npu-smi", "/etc/hccn.conf"):
        write(tmp_path, path)
    assert [f.status for f in preflight.check_tools(ATLAS, tmp_path)] == ["ok"] * 3
    (tmp_path / "etc" / "hccn.conf").unlink()
    found = preflight.check_tools(ATLAS, tmp_path)
    assert [f.status for f in found] == ["ok", "ok", "problem"]
    assert found[2].seen == "/etc/hccn.conf (mounted into the container) is missing on this host"


def test_npu_tool_mounted_from_elsewhere(tmp_path):
    def mount_elsewhere(d):
        d["container"]["volumes"] = [{"host": "/opt/site/npu-smi", "container": "/usr/local/bin/npu-smi"}]
    t = edited(ATLAS, mount_elsewhere)
    write(tmp_path, "/opt/site/npu-smi")
    hccn_tool, npu_smi, conf = preflight.check_tools(t, tmp_path)
    assert npu_smi.status == "ok" and npu_smi.seen.startswith("/opt/site/npu-smi (mounted at npu.npu_smi")
    assert hccn_tool.status == conf.status == "skip" and "must be in the image" in hccn_tool.seen


def test_npu_tools_on_the_host(tmp_path):
    t = edited(ATLAS, lambda d: d["npu"].update(checks_in="host", npu_smi="/usr/local/sbin/npu-smi"))
    write(tmp_path, "/usr/local/bin/npu-smi")  # the mounted path: not where the host checks look
    assert preflight.check_tools(t, tmp_path)[1].status == "problem"
    write(tmp_path, "/usr/local/sbin/npu-smi")
    assert preflight.check_tools(t, tmp_path)[1].status == "ok"


def test_npu_tools_emulated():
    assert {f.status for f in preflight.check_tools(CPU, Path("/nonexistent"))} == {"skip"}


def test_image(tmp_path):
    image = ATLAS.container.image
    assert preflight.check_image(ATLAS, FakeDocker(images=[image])).status == "ok"
    f = preflight.check_image(ATLAS, FakeDocker())
    assert f.status == "problem" and f"docker pull {image}" in f.fix and "docker load -i image.tar" in f.fix
    assert preflight.check_image(ATLAS, None).status == "skip"
    assert preflight.check_image(CPU, FakeDocker()).status == "skip"  # built by scripts/setup


SITE = edited(ATLAS, lambda d: d["container"]["volumes"].append({"host": "/data/models", "container": "/model"}))


def test_weights(tmp_path):
    f = preflight.check_model(ATLAS, tmp_path, ATLAS.model.path)
    assert f.status == "problem" and "no volume" in f.seen and "container: /model}" in f.fix
    f = preflight.check_model(SITE, tmp_path, SITE.model.path)
    assert f.status == "problem" and f.seen.startswith("/data/models/Qwen2.5-72B-Instruct (model.path")
    (tmp_path / "data/models/Qwen2.5-72B-Instruct").mkdir(parents=True)
    f = preflight.check_model(SITE, tmp_path, SITE.model.path)
    assert f.status == "problem" and "has no config.json" in f.seen
    write(tmp_path, "/data/models/Qwen2.5-72B-Instruct/config.json", "{}")
    assert preflight.check_model(SITE, tmp_path, SITE.model.path).status == "ok"


def test_weights_of_each_model_path(tmp_path):
    def two_paths(d):
        d["instances"][1]["model_path"] = "/model/Other/"
    t = edited(SITE, two_paths)
    write(tmp_path, "/data/models/Qwen2.5-72B-Instruct/config.json", "{}")
    found = preflight.check_weights(t, tmp_path)
    assert [f.status for f in found] == ["problem", "ok"] and "/model/Other/" in found[0].seen


def test_mooncake_import(tmp_path):
    image = PLAIN.container.image
    write(tmp_path, "/etc/hccn.conf")
    docker = FakeDocker(images=[image])
    f = preflight.check_mooncake(PLAIN, tmp_path, docker, True, 60)
    assert f.status == "ok" and "mooncake/__init__.py" in f.seen
    call = docker.calls[0]
    assert call["image"] == image and "import mooncake, mooncake.store" in call["code"] and call["timeout"] == 60
    assert call["volumes"] == {"/etc/hccn.conf": {"bind": "/etc/hccn.conf", "mode": "ro"}}  # only what exists


def test_mooncake_not_importable(tmp_path):
    error = ("Traceback (most recent call last):\n  File \"<string>\", line 1, in <module>\n"
             "ModuleNotFoundError: No module named 'mooncake'\n")
    f = preflight.check_mooncake(PLAIN, tmp_path, FakeDocker(run=(1, error)), True, 60)
    assert f.status == "problem" and f.seen.endswith("failed (exit 1): ModuleNotFoundError: No module named 'mooncake'")
    assert "Install Mooncake" in f.fix
    f = preflight.check_mooncake(PLAIN, tmp_path, FakeDocker(run=(None, "")), True, 60)
    assert f.status == "problem" and "did not finish in 60 s" in f.seen


def test_mooncake_import_skipped_without_what_it_needs(tmp_path):
    docker = FakeDocker()
    assert preflight.check_mooncake(PLAIN, tmp_path, docker, False, 60).status == "skip"
    assert preflight.check_mooncake(PLAIN, tmp_path, None, True, 60).status == "skip"
    assert preflight.check_mooncake(CPU, tmp_path, docker, True, 60).status == "skip"
    assert docker.calls == []


def test_mooncake_import_runs_in_the_derived_image_once_it_is_built(tmp_path):
    from kit.build import derived_tag

    base = ATLAS.container.image
    docker = FakeDocker(images=[base])
    derived = derived_tag(ATLAS, docker.image_id(base))
    f = preflight.check_mooncake(ATLAS, tmp_path, docker, True, 60)
    assert f.status == "problem" and derived in f.seen and "scripts/setup" in f.fix and docker.calls == []
    docker.images.add(derived)
    assert preflight.check_mooncake(ATLAS, tmp_path, docker, True, 60).status == "ok"
    assert docker.calls[0]["image"] == derived


def test_listening_sockets_of_recorded_proc_files():
    assert preflight.listening(PROC_NET_TCP) == [("127.0.0.1", 44197), ("127.0.0.1", 8002), ("0.0.0.0", 15065)]
    assert preflight.listening(PROC_NET_TCP6) == [("::", 16296)]


def _proc_net(root: Path, tcp: str = PROC_NET_TCP, tcp6: str = PROC_NET_TCP6) -> None:
    write(root, "/proc/net/tcp", tcp)
    write(root, "/proc/net/tcp6", tcp6)


def _listen_line(address_hex: str, port: int) -> str:
    return f"   1: {address_hex}:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1 0 100\n"


def test_ports(tmp_path):
    _proc_net(tmp_path)
    f = preflight.check_ports(ATLAS, tmp_path)  # 127.0.0.1:8002 does not keep 90.90.135.188:8002 from binding
    assert f.status == "ok" and f.seen == "50088, 9003, 8002, 8003 free"
    _proc_net(tmp_path, PROC_NET_TCP + _listen_line("0100007F", 9003))
    f = preflight.check_ports(ATLAS, tmp_path)
    assert f.status == "problem" and f.seen == "already in use: 9003 (mooncake.master.metrics_port; 127.0.0.1 listens)"
    _proc_net(tmp_path, PROC_NET_TCP + _listen_line("00000000", 8003))
    f = preflight.check_ports(ATLAS, tmp_path)
    assert f.status == "problem" and "8003 (instance-2 port; 0.0.0.0 listens)" in f.seen


def test_ports_of_cpu_local_on_loopback(tmp_path):
    _proc_net(tmp_path)
    f = preflight.check_ports(CPU, tmp_path)
    assert f.status == "problem" and f.seen == "already in use: 8002 (instance-1 port; 127.0.0.1 listens)"


def test_ports_skipped_off_the_host_network(tmp_path):
    _proc_net(tmp_path, _listen_line("00000000", 8002))
    t = edited(CPU, lambda d: d["container"].update(network_mode="bridge"))
    assert preflight.check_ports(t, tmp_path).status == "skip"
    assert preflight.check_ports(CPU, tmp_path / "nothing").status == "skip"


def test_host_memory(tmp_path):
    write(tmp_path, "/proc/meminfo", MEMINFO)
    f = preflight.check_memory(ATLAS, tmp_path)
    assert f.status == "problem" and "808 GiB" in f.seen and "23.5 GiB (MemTotal)" in f.seen
    assert f.fix.startswith("mooncake.config.global_segment_size: lower it to at most")
    assert preflight.check_memory(CPU, tmp_path) == Finding("host memory", "ok",
                                                            "MemTotal 23.5 GiB holds the pool's segments")
    write(tmp_path, "/proc/meminfo", "MemTotal:       1073741824 kB\n")  # 1 TiB
    assert preflight.check_memory(ATLAS, tmp_path).status == "ok"
    assert preflight.check_memory(ATLAS, tmp_path / "nothing").status == "skip"


def atlas_host(root: Path) -> None:
    """Everything the site target needs on a fake Atlas host."""
    for d in SITE.container.devices:
        write(root, d)
    _with_driver(root, VERSION_INFO_25_5_0)
    for path in ("/usr/local/Ascend/driver/tools/hccn_tool", "/usr/local/bin/npu-smi", "/etc/hccn.conf"):
        write(root, path)
    write(root, "/data/models/Qwen2.5-72B-Instruct/config.json", "{}")
    _proc_net(root)
    write(root, "/proc/meminfo", "MemTotal:       1073741824 kB\n")


NAMES = ["architecture", "python", "docker", "npu devices", "npu driver", "hccn_tool", "npu-smi", "hccn.conf", "image",
         "weights", "mooncake import", "ports", "host memory"]


def test_run_preflight_green_on_a_full_atlas_host(tmp_path):
    atlas_host(tmp_path)
    from kit.build import derived_tag

    docker = FakeDocker(images=[SITE.container.image])
    docker.images.add(derived_tag(SITE, docker.image_id(SITE.container.image)))  # setup built it
    found = run_preflight(SITE, root=tmp_path, docker=docker, machine="aarch64", python=(3, 9, 18))
    assert [f.name for f in found] == NAMES
    assert [f for f in found if f.status != "ok"] == []


def test_run_preflight_without_npu_and_docker(tmp_path):
    """The NPU pieces are problems; the Docker-backed checks are skipped, saying why."""
    found = run_preflight(ATLAS, root=tmp_path, docker=FakeDocker(down=True), machine="x86_64", python=(3, 11, 7))
    status = {f.name: f.status for f in found}
    assert [n for n in NAMES if status[n] == "problem"] == [
        "docker", "npu devices", "npu driver", "hccn_tool", "npu-smi", "hccn.conf", "weights"]
    assert status["image"] == status["mooncake import"] == status["ports"] == status["host memory"] == "skip"


def test_render():
    text = preflight.render([Finding("python", "ok", "3.9.18"), Finding("image", "problem", "x absent", "load it."),
                             Finding("ports", "skip", "why")], "t")
    assert text.splitlines() == ["ok      python: 3.9.18", "PROBLEM image: x absent", "        fix: load it.",
                                 "skip    ports: why", "preflight t: 1 problem(s), 1 ok, 1 skipped"]


def test_exit_codes(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(preflight, "run_preflight", lambda t, **kw: [Finding("python", "ok", "3.9.18")])
    assert preflight.main(["--target", "cpu-local"]) == 0
    monkeypatch.setattr(preflight, "run_preflight", lambda t, **kw: [Finding("image", "problem", "absent", "pull.")])
    assert preflight.main(["--target", "cpu-local"]) == 1
    assert "PROBLEM image: absent" in capsys.readouterr().out
    bad = write(tmp_path, "bad.yaml", "name: bad\n")
    assert preflight.main(["--target", str(bad)]) == 2
    assert f"target {bad} is not valid" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        preflight.main(["--no-such-flag"])
    assert usage.value.code == 2


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        preflight.main(["--help"])
    out = capsys.readouterr().out
    assert "0  no problem" in out and "1  at least one problem" in out and "2  bad usage" in out
