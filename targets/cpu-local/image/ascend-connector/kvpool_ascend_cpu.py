"""vllm-ascend 0.11.0's Mooncake pool connector (MooncakeConnectorStoreV1) on vLLM 0.11.0's CPU backend.

The seed's instances load vllm-ascend's MooncakeConnectorStoreV1, and that code decides what is looked up,
loaded and saved, how pool keys are made and what is logged. This module runs that very code (unpacked from
the vllm-ascend wheel into the image) and replaces only the three things of it that need an NPU:
1. `torch.npu.current_stream().synchronize()` before a put: CPU kernels have finished when the forward
   returns, so there is nothing to wait for.
2. The transfer engine is initialised with the protocol "ascend", hard-coded in
   `transfer_engine.get_global_te`: here with mooncake.json's protocol (tcp). This is the seed's
   `use_ascend_direct: true` path: store.setup with that engine, batch_put_from/get_into_multi_buffers.
3. The connector reads each layer's KV in the NPU layout, a (key, value) pair of [blocks, block_size,
   kv_heads, head_dim] tensors; vLLM's CPU backend keeps one [2, blocks, block_size * kv_heads * head_dim]
   tensor per layer. The same memory is handed over as that pair of views.
Loaded by kv_transfer_config {"kv_connector": "MooncakeConnectorStoreV1",
"kv_connector_module_path": "kvpool_ascend_cpu"}.
"""

import json
import os
import types

import torch
from mooncake.engine import TransferEngine

if not hasattr(torch, "npu"):
    class _Stream:
        def synchronize(self) -> None:
            pass

    torch.npu = types.SimpleNamespace(current_stream=_Stream)

from vllm_ascend.distributed.mooncake import transfer_engine as _te  # noqa: E402
from vllm_ascend.distributed.mooncake.mooncake_store_connector_v1 import MooncakeConnectorV1  # noqa: E402


class _ConfiguredProtocolEngine(TransferEngine):
    """The transfer engine vllm-ascend creates, with mooncake.json's protocol in place of "ascend"."""

    def initialize(self, hostname, metadata_server, protocol, device_name):  # noqa: ARG002 - protocol replaced
        with open(os.environ["MOONCAKE_CONFIG_PATH"]) as f:
            configured = json.load(f).get("protocol", "tcp")
        return super().initialize(hostname, metadata_server, configured, device_name)


_te.TransferEngine = _ConfiguredProtocolEngine  # read by get_global_te at call time


class MooncakeConnectorStoreV1(MooncakeConnectorV1):
    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        config = self._vllm_config
        heads = config.model_config.get_num_kv_heads(config.parallel_config)
        head_dim = config.model_config.get_head_size()
        block_size = config.cache_config.block_size
        pairs = {}
        for name, cache in kv_caches.items():
            two, blocks, per_block = cache.shape
            if two != 2 or per_block != block_size * heads * head_dim:
                raise RuntimeError(f"{name}: KV cache of shape {tuple(cache.shape)} is not the CPU backend's "
                                   f"[2, blocks, {block_size}*{heads}*{head_dim}]")
            pairs[name] = tuple(cache.view(2, blocks, block_size, heads, head_dim).unbind(0))
        super().register_kv_caches(pairs)
