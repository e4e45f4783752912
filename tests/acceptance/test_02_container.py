"""Stage 2, the container: running as the target says, with every device, volume and the shm size."""

from __future__ import annotations

import shlex

import allure
import pytest

from harness.config import parse_size
from harness.runtime import SHM_SIZE_ARGV

pytestmark = [pytest.mark.acceptance, pytest.mark.container, allure.parent_suite("acceptance"),
              allure.suite("2 container"), allure.feature("2 container")]


def test_container_running(containers, target, node_name):
    container = containers[node_name]
    assert container.is_running(), f"container {container.name} is {container.handle.status}, expected running"
    assert container.handle.attrs["HostConfig"]["NetworkMode"] == target.container.network_mode, (
        f"network mode {container.handle.attrs['HostConfig']['NetworkMode']}, expected {target.container.network_mode}")
    if target.network is not None:  # each node at its own address on the nodes' network
        got = container.handle.attrs["NetworkSettings"]["Networks"].get(target.network.name, {}).get("IPAddress")
        want = target.node(node_name).address
        assert got == want, f"container {container.name} is at {got!r} on {target.network.name}, expected {want}"


def test_device_mapped(containers, container_hosts, container_device, node_name):
    container, container_host = containers[node_name], container_hosts[node_name]
    host_path, _, rest = container_device.partition(":")
    inside = rest.split(":")[0] if rest else host_path
    mapped = {d["PathInContainer"]: d["PathOnHost"] for d in container.handle.attrs["HostConfig"]["Devices"] or []}
    assert mapped.get(inside) == host_path, (
        f"device {inside}: mapped from {mapped.get(inside)!r}, expected {host_path!r} (container.devices)")
    assert container_host.file(inside).exists, f"device {inside} is mapped but absent inside the container"


def test_volume_mounted(containers, container_hosts, container_volume, node_name):
    container, container_host = containers[node_name], container_hosts[node_name]
    mounts = {m["Destination"]: m for m in container.handle.attrs["Mounts"]}
    m = mounts.get(container_volume.container.rstrip("/") or "/")
    assert m is not None, (f"{container_volume.container} is not mounted (expected from {container_volume.host}; "
                           f"mounted: {sorted(mounts)})")
    assert m["Source"].rstrip("/") == str(container_volume.host_path()).rstrip("/"), (
        f"{container_volume.container} is mounted from {m['Source']}, expected {container_volume.host}")
    assert m["RW"] == (container_volume.mode == "rw"), f"{container_volume.container}: RW={m['RW']}, expected mode " \
                                                         f"{container_volume.mode}"
    assert container_host.file(container_volume.container).exists


def test_shm_size(containers, container_hosts, target, node_name):
    container, container_host = containers[node_name], container_hosts[node_name]
    want = parse_size(target.container.shm_size)
    got = container.handle.attrs["HostConfig"]["ShmSize"]
    assert got == want, f"shm size {got} bytes, expected {want} ({target.container.shm_size}, container.shm_size)"
    df = container_host.run(shlex.join(SHM_SIZE_ARGV)).stdout.split()
    assert int(df[-1]) == want, f"/dev/shm inside the container is {df[-1]} bytes, expected {want}"
