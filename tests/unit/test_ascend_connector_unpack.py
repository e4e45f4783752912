"""targets/cpu-local/image/ascend-connector/unpack.py picks vllm-ascend's pool connector out of its wheel (0.11)
or its sdist (0.23) by what the archive holds. The archives are built here with the release's own paths: the
0.11.0rc2 wheel's vllm_ascend/distributed/mooncake/ (as the seed's Dockerfile step unpacked it) and the
0.23.0.post1 sdist's files (`tar -tzf vllm_ascend-0.23.0.post1.tar.gz`, read on 2026-12-03), with made-up bodies.
"""

from __future__ import annotations

import importlib.util
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from harness.config import ROOT

_spec = importlib.util.spec_from_file_location("unpack", ROOT / "targets/cpu-local/image/ascend-connector/unpack.py")
unpack = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(unpack)  # type: ignore[union-attr]

STORE = "vllm_ascend/distributed/kv_transfer/kv_pool/ascend_store/"
# The 0.23.0.post1 sdist's paths the connector needs (19 files), and some it must leave out.
SDIST_023_WANTED = [
    "vllm_ascend/__init__.py", "vllm_ascend/distributed/__init__.py", "vllm_ascend/distributed/kv_transfer/__init__.py",
    "vllm_ascend/distributed/kv_transfer/kv_pool/__init__.py", "vllm_ascend/distributed/kv_transfer/utils/__init__.py",
    "vllm_ascend/distributed/kv_transfer/utils/mooncake_transfer_engine.py", "vllm_ascend/memcache_comm_fence.py",
    *(STORE + n for n in ("__init__.py", "ascend_store_connector.py", "config_data.py", "coordinator.py",
                          "kv_transfer.py", "pool_scheduler.py", "pool_worker.py", "backend/__init__.py",
                          "backend/backend.py", "backend/memcache_backend.py", "backend/mooncake_backend.py",
                          "backend/yuanrong_backend.py")),
]
SDIST_023_LEFT = ["vllm_ascend/utils.py", "vllm_ascend/distributed/parallel_state.py",
                  "vllm_ascend/distributed/kv_transfer/utils/utils.py",
                  "vllm_ascend/distributed/kv_transfer/kv_pool/ucm_connector.py",
                  "tests/ut/distributed/ascend_store/test_backend.py", "tests/ut/distributed/mooncake/__init__.py",
                  "PKG-INFO"]
WHEEL_011_WANTED = ["vllm_ascend/__init__.py", "vllm_ascend/distributed/__init__.py",
                    "vllm_ascend/distributed/mooncake/__init__.py", "vllm_ascend/distributed/mooncake/config_data.py",
                    "vllm_ascend/distributed/mooncake/mooncake_store_connector_v1.py",
                    "vllm_ascend/distributed/mooncake/transfer_engine.py"]
WHEEL_011_LEFT = ["vllm_ascend/utils.py", "vllm_ascend/distributed/parallel_state.py",
                  "vllm_ascend-0.11.0rc2.dist-info/entry_points.txt"]


def body(name: str) -> bytes:
    return f"# {name}\n".encode()


def make_sdist(folder: Path, names: list[str], version: str = "0.23.0.post1") -> Path:
    path = folder / f"vllm_ascend-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as t:
        for name in names:
            data = body(name)
            info = tarfile.TarInfo(f"vllm_ascend-{version}/{name}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def make_wheel(folder: Path, names: list[str], version: str = "0.11.0rc2") -> Path:
    path = folder / f"vllm_ascend-{version}-cp311-cp311-manylinux_2_24_x86_64.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name in names:
            z.writestr(name, body(name))
    return path


def tree(site: Path) -> dict[str, bytes]:
    return {str(p.relative_to(site)): p.read_bytes() for p in site.rglob("*") if p.is_file()}


def test_the_023_sdist_gives_the_ascend_store_connector_with_an_empty_package_init(tmp_path):
    archive = make_sdist(tmp_path, SDIST_023_WANTED + SDIST_023_LEFT)
    site = tmp_path / "site"
    assert unpack.unpack(archive, site) == sorted(SDIST_023_WANTED)
    got = tree(site)
    assert sorted(got) == sorted(SDIST_023_WANTED)
    assert got["vllm_ascend/__init__.py"] == b""  # the real one imports the NPU platform
    assert all(got[n] == body(n) for n in SDIST_023_WANTED if n != "vllm_ascend/__init__.py")


def test_the_011_wheel_gives_the_seeds_package_as_it_is(tmp_path):
    archive = make_wheel(tmp_path, WHEEL_011_WANTED + WHEEL_011_LEFT)
    site = tmp_path / "site"
    unpack.unpack(archive, site)
    assert tree(site) == {n: body(n) for n in WHEEL_011_WANTED}  # the package __init__.py too, unchanged


def test_an_archive_short_of_a_needed_file_or_with_neither_connector_stops_the_build(tmp_path):
    short = make_sdist(tmp_path, [n for n in SDIST_023_WANTED if not n.endswith("memcache_comm_fence.py")])
    with pytest.raises(SystemExit, match=r"memcache_comm_fence\.py"):
        unpack.unpack(short, tmp_path / "site")
    neither = make_wheel(tmp_path, WHEEL_011_LEFT, version="0.9.0")
    with pytest.raises(SystemExit, match="holds neither"):
        unpack.unpack(neither, tmp_path / "site2")
    assert not (tmp_path / "site").exists() and not (tmp_path / "site2").exists()


def test_the_archive_is_the_releases_wheel_or_its_sdist_and_only_one(tmp_path):
    house = tmp_path / "wheelhouse"
    house.mkdir()
    sdist = make_sdist(house, SDIST_023_WANTED)
    wheel = make_wheel(house, WHEEL_011_WANTED)
    make_wheel(house, WHEEL_011_WANTED, version="0.23.0")  # 0.23.0 is not 0.23.0.post1
    assert unpack.find_archive(house, "0.23.0.post1") == sdist
    assert unpack.find_archive(house, "0.11.0rc2") == wheel
    make_sdist(house, SDIST_023_WANTED, version="0.11.0rc2")
    with pytest.raises(SystemExit, match="want one vllm_ascend-0.11.0rc2"):
        unpack.find_archive(house, "0.11.0rc2")
    with pytest.raises(SystemExit, match="found \\[\\]"):
        unpack.find_archive(house, "0.30.0rc2")
