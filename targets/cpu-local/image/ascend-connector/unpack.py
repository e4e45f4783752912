"""Unpack vllm-ascend's pool connector, and only it, into site-packages: `unpack.py WHEELHOUSE VERSION SITE`.

vllm-ascend is not installed: installed, its entry points make vLLM load its NPU platform and model patches,
which need torch_npu. Its archive in the wheelhouse is the release's wheel (0.11.0rc2, downloaded by pip) or
its sdist (0.23.0.post1, which has no wheel; fetched by kit/sdist.py). Which files come out depends on what the
archive holds:
- 0.11: the package vllm_ascend/distributed/mooncake/ (MooncakeConnectorStoreV1) and the two package
  __init__.py files above it, as they are (kvpool_ascend_cpu.py runs it).
- 0.23: AscendStoreConnector, vllm_ascend/distributed/kv_transfer/kv_pool/ascend_store/ with backend/, the
  transfer engine helper kv_transfer/utils/mooncake_transfer_engine.py, vllm_ascend/memcache_comm_fence.py
  (pool_worker.py:69 and config_data.py:16 import it) and the package __init__.py files above them, with
  vllm_ascend/__init__.py empty: the real one imports vllm_ascend.logger and the NPU platform
  (__init__.py:78). kvpool_ascend_store_cpu.py runs it.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

MOONCAKE_011 = "vllm_ascend/distributed/mooncake/"
ASCEND_STORE = "vllm_ascend/distributed/kv_transfer/kv_pool/ascend_store/"
PACKAGE_INIT = "vllm_ascend/__init__.py"
WITH_MOONCAKE_011 = (PACKAGE_INIT, "vllm_ascend/distributed/__init__.py")
WITH_ASCEND_STORE = (
    PACKAGE_INIT,
    "vllm_ascend/distributed/__init__.py",
    "vllm_ascend/distributed/kv_transfer/__init__.py",
    "vllm_ascend/distributed/kv_transfer/kv_pool/__init__.py",
    "vllm_ascend/distributed/kv_transfer/utils/__init__.py",
    "vllm_ascend/distributed/kv_transfer/utils/mooncake_transfer_engine.py",
    "vllm_ascend/memcache_comm_fence.py",
)


def find_archive(wheelhouse: Path, version: str) -> Path:
    """The release's one wheel or its sdist."""
    wheels = sorted(wheelhouse.glob(f"vllm_ascend-{version}-*.whl"))
    found = [*wheels, *wheelhouse.glob(f"vllm_ascend-{version}.tar.gz")]
    if len(found) != 1:
        names = [p.name for p in found]
        sys.exit(f"unpack.py: want one vllm_ascend-{version} wheel or sdist in {wheelhouse}, found {names}")
    return found[0]


def read_archive(path: Path) -> dict[str, bytes]:
    """Every file of a wheel, or of an sdist without its top folder (vllm_ascend-VERSION/), by package path."""
    if path.name.endswith(".whl"):
        with zipfile.ZipFile(path) as z:
            return {n: z.read(n) for n in z.namelist() if n.startswith("vllm_ascend/") and not n.endswith("/")}
    files = {}
    with tarfile.open(path) as t:
        for m in t.getmembers():
            parts = PurePosixPath(m.name).parts[1:]
            if m.isfile() and parts[:1] == ("vllm_ascend",):
                files["/".join(parts)] = t.extractfile(m).read()
    return files


def pick(files: dict[str, bytes]) -> dict[str, bytes]:
    """The connector's files, by which connector the archive holds (0.23's first: it keeps no 0.11 package)."""
    if any(n.startswith(ASCEND_STORE) for n in files):
        prefix, extra = ASCEND_STORE, WITH_ASCEND_STORE
    elif any(n.startswith(MOONCAKE_011) for n in files):
        prefix, extra = MOONCAKE_011, WITH_MOONCAKE_011
    else:
        sys.exit(f"unpack.py: the archive holds neither {MOONCAKE_011} (0.11) nor {ASCEND_STORE} (0.23)")
    missing = [n for n in extra if n not in files]
    if missing:
        sys.exit(f"unpack.py: the archive has {prefix} but not {missing}")
    chosen = {n: data for n, data in files.items() if n.startswith(prefix) or n in extra}
    if prefix == ASCEND_STORE:
        chosen[PACKAGE_INIT] = b""
    return chosen


def unpack(archive: Path, site: Path) -> list[str]:
    chosen = pick(read_archive(archive))
    for name, data in chosen.items():
        if ".." in PurePosixPath(name).parts:
            sys.exit(f"unpack.py: refusing {name!r}")
        out = site / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    return sorted(chosen)


if __name__ == "__main__":
    wheelhouse, version, site = sys.argv[1:]
    archive = find_archive(Path(wheelhouse), version)
    names = unpack(archive, Path(site))
    print(f"unpack.py: {len(names)} files of {archive.name} into {site}")
