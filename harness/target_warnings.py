"""Findings about a target that do not stop a run: each (field, what and why), printed under `target warnings` in
the run's summary (fixtures/target.py) and listed in the Allure report's environment (fixtures/deployment.py).
harness/traps.py has the ones that refuse a target."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from harness import ascend_store

if TYPE_CHECKING:
    from harness.config import Target

Finding = tuple[str, str]  # (field, what and why)


def deprecated_connector_name(t: Target) -> list[Finding]:
    """On vllm-ascend 0.23, MooncakeConnectorStoreV1 is an alias of AscendStoreConnector that logs its own deprecation
    (ascend_store_connector.py:97-102) and will be removed: a target that names it runs, and is told so."""
    if not ascend_store.is_0_23_era(t):
        return []
    version = ascend_store.declared_version(t)
    why = (f"vllm-ascend {version[0]}.{version[1]} (the target's image or build arguments)" if version else
           f"vllm-ascend 0.23 (its kv_connector_extra_config has {' or '.join(ascend_store.ONLY_0_23_KEYS)}, keys "
           "only 0.23 reads)")
    return [(f"instances[{i}].kv_transfer_config.kv_connector",
             f"{ascend_store.OLD_NAME} is a deprecated alias of {ascend_store.CONNECTOR} on {why}, which logs "
             f"{ascend_store.DEPRECATION!r}; name {ascend_store.CONNECTOR}")
            for i, x in enumerate(t.instances)
            if x.kv_transfer_config is not None and x.kv_transfer_config.kv_connector == ascend_store.OLD_NAME]


WARNINGS: list[Callable[[Target], list[Finding]]] = [deprecated_connector_name]


def check_all(t: Target) -> list[Finding]:
    """Every warning's findings, in WARNINGS order."""
    return [w for check in WARNINGS for w in check(t)]
