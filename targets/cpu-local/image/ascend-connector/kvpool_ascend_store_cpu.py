"""vllm-ascend 0.23.0.post1's KV pool connector (AscendStoreConnector, backend mooncake) on vLLM 0.23.0's CPU backend.

Today's vllm-ascend instances load AscendStoreConnector (or its deprecated alias MooncakeConnectorStoreV1), and
that code decides what is looked up, loaded and saved, how pool keys are made and what is logged. This module runs
that very code, unpacked from the vllm-ascend sdist into the image (ascend-connector/unpack.py), and replaces only
what needs an NPU (paths are under the sdist's vllm_ascend/; ascend_store/ is
distributed/kv_transfer/kv_pool/ascend_store/):
1. Two modules the pool imports from, whose real bodies import vllm_ascend.utils and so torch_npu (utils.py:34), by
   the three functions it takes from them, with their real bodies on vLLM's groups:
   distributed/parallel_state.get_global_rank (ascend_store/backend/mooncake_backend.py:21; used only to name a
   per-rank SSD offload folder, :118) and distributed/utils.get_decode_context_model_parallel_{world_size,rank}
   (ascend_store/pool_worker.py:65-68; distributed/utils.py:11-18).
2. torch.npu.set_device (mooncake_backend.py:172, the scheduler's client) and torch.npu.Event with record and
   synchronize (pool_worker.py:1442-1443 before a put, kv_transfer.py:838): no-ops, since CPU kernels have finished
   when the forward returns.
3. MooncakeBackend.set_device, called by each transfer thread (kv_transfer.py:487), builds torch.device("npu:N")
   (mooncake_backend.py:175-178), which CPU torch refuses: a no-op.
4. The protocol. mooncake.json keeps the guide's "ascend", since MooncakeBackend refuses any other
   (mooncake_backend.py:66-67); the transfer engine is initialised with a hard-coded "ascend"
   (distributed/kv_transfer/utils/mooncake_transfer_engine.py:26) and store.setup gets mooncake.json's protocol
   (mooncake_backend.py:136). Both get tcp here. The two classes are imported at call time
   (mooncake_transfer_engine.py:17, mooncake_backend.py:95), so replacing them in mooncake's modules is enough.
No KV layout change (unlike 0.11): vLLM 0.23's CPU cache is one [blocks, kv_heads, block_size, 2*head_dim] tensor per
layer, blocks first (vllm/v1/attention/backends/cpu_attn.py:89-96), which the connector reads as it is
(pool_worker.py:541-555). The layerwise path (use_layerwise) needs more of torch.npu and is not run here.
Loaded by kv_transfer_config {"kv_connector": "AscendStoreConnector", "kv_connector_module_path":
"kvpool_ascend_store_cpu", "kv_connector_extra_config": {"backend": "mooncake", "lookup_rpc_port": "1"}}.
"""

import functools
import sys
import types

import torch

CPU_PROTOCOL = "tcp"


class _Event:
    def record(self, stream=None) -> None:
        pass

    def synchronize(self) -> None:
        pass


if not hasattr(torch, "npu"):
    torch.npu = types.SimpleNamespace(set_device=lambda device: None, Event=_Event)


def _global_rank(parallel_config=None) -> int:
    """The real one also counts data-parallel replicas; each instance here is one replica of one rank."""
    from vllm.distributed.parallel_state import get_world_group
    return get_world_group().rank_in_group


def _dcp_world_size() -> int:
    from vllm.distributed import get_dcp_group
    return get_dcp_group().world_size


def _dcp_rank() -> int:
    from vllm.distributed import get_dcp_group
    return get_dcp_group().rank_in_group


def _module(name: str, **attrs) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module  # found there before the file system is searched


_module("vllm_ascend.distributed.parallel_state", get_global_rank=_global_rank)
_module("vllm_ascend.distributed.utils", get_decode_context_model_parallel_world_size=_dcp_world_size,
        get_decode_context_model_parallel_rank=_dcp_rank)

import mooncake.engine  # noqa: E402
import mooncake.store  # noqa: E402


class _TcpEngine(mooncake.engine.TransferEngine):
    def initialize(self, hostname, metadata_server, protocol, device_name):  # noqa: ARG002 - protocol replaced
        return super().initialize(hostname, metadata_server, CPU_PROTOCOL, device_name)


class _TcpStore(mooncake.store.MooncakeDistributedStore):
    # wraps: the connector reads setup's docstring to see whether this Mooncake takes SSD offload arguments
    # (mooncake_backend.py:28-41).
    @functools.wraps(mooncake.store.MooncakeDistributedStore.setup)
    def setup(self, *args, **kwargs):
        if kwargs.get("protocol") == "ascend":
            kwargs["protocol"] = CPU_PROTOCOL
        return super().setup(*args, **kwargs)


mooncake.engine.TransferEngine = _TcpEngine
mooncake.store.MooncakeDistributedStore = _TcpStore

from vllm_ascend.distributed.kv_transfer.kv_pool.ascend_store.ascend_store_connector import (  # noqa: E402
    AscendStoreConnector,
)
from vllm_ascend.distributed.kv_transfer.kv_pool.ascend_store.backend import mooncake_backend  # noqa: E402

mooncake_backend.MooncakeBackend.set_device = lambda self: None

# The alias vllm-ascend registers (distributed/kv_transfer/__init__.py:38-42): the same class, which logs a
# deprecation warning when it is named so (ascend_store_connector.py:97-102).
MooncakeConnectorStoreV1 = AscendStoreConnector
