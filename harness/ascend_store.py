"""Which of vllm-ascend's pool connectors an instance runs: 0.11's MooncakeConnectorStoreV1 (the seed's), or 0.23's
AscendStoreConnector, which kept the old name as an alias of itself.

The name alone does not tell them apart on a 0.23-era stack, so the target's declared vllm-ascend version does: the
image's tag (`.../vllm-ascend:v0.23.0.post1`) or a build argument that pins it (`vllm-ascend==0.11.0rc2`). A target
that declares neither (a site's own image tag) is read by its kv_connector_extra_config: `backend` and
`lookup_rpc_port` are keys only 0.23's connector reads (ascend_store_connector.py:90-91, pool_scheduler.py:1146-1161);
0.11's reads mooncake_rpc_port. 0.23.0.post1 is the first release the suite knows this of, so it is the line.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.config import Instance, Target

OLD_NAME = "MooncakeConnectorStoreV1"  # vllm-ascend 0.11's connector; an alias in 0.23 (kv_transfer/__init__.py:38-42)
CONNECTOR = "AscendStoreConnector"  # vllm-ascend 0.23 (distributed/kv_transfer/kv_pool/ascend_store/)
BACKENDS = ("mooncake", "memcache", "yuanrong")  # ascend_store/backend/__init__.py:17-30
FIRST_KNOWN = (0, 23)
ONLY_0_23_KEYS = ("backend", "lookup_rpc_port")
# What 0.23's connector logs when it is named by its old name (ascend_store_connector.py:97-102; "MoonCake" as spelt
# there).
DEPRECATION = ("It is recommended to use the AscendStoreConnector, as the MoonCakeStoreConnector will be removed in "
               "the future.")

_DECLARED = (re.compile(r"vllm-ascend:v?(\d+)\.(\d+)"), re.compile(r"vllm[-_]ascend\s*==\s*(\d+)\.(\d+)"))


def declared_version(t: Target) -> tuple[int, int] | None:
    """(major, minor) of the vllm-ascend the target declares, by its image tag or a build argument; None: none."""
    for text in (t.container.image, *t.container.build_args.values()):
        for pattern in _DECLARED:
            m = pattern.search(text)
            if m:
                return int(m[1]), int(m[2])
    return None


def is_0_23_era(t: Target) -> bool:
    """The target runs vllm-ascend 0.23 or later: by its declared version, else by the keys only 0.23's connector
    reads on an instance that names one of vllm-ascend's connectors (vLLM's own MooncakeStoreConnector reads
    lookup_rpc_port too: it says nothing of vllm-ascend)."""
    version = declared_version(t)
    if version is not None:
        return version >= FIRST_KNOWN
    ascend = [x.kv_transfer_config for x in t.instances
              if x.kv_transfer_config is not None and x.kv_transfer_config.kv_connector in (OLD_NAME, CONNECTOR)]
    return any(key in kv.kv_connector_extra_config for kv in ascend for key in ONLY_0_23_KEYS)


def runs_ascend_store(t: Target, x: Instance) -> bool:
    """The instance's connector is vllm-ascend 0.23's AscendStoreConnector, by its name or by its old one."""
    kv = x.kv_transfer_config
    return kv is not None and (kv.kv_connector == CONNECTOR or (kv.kv_connector == OLD_NAME and is_0_23_era(t)))
