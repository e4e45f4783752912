"""The NPUs stage 1 checks: each device of each node, and each device with the same device of the next node (the
successor guide's cross-node ping). Their names are the test ids: "device5", or "node2-device5" on several nodes."""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import Target


@dataclass(frozen=True)
class NpuDevice:
    """One NPU of one node, as stage 1 checks it; reads "device5" (one node) or "node2-device5"."""

    node: str
    id: int
    multi_node: bool = False

    def __str__(self) -> str:
        return f"{self.node}-device{self.id}" if self.multi_node else f"device{self.id}"

    @property
    def label(self) -> str:
        """For messages: "device 5" or "device 5 of node2"."""
        return f"device {self.id} of {self.node}" if self.multi_node else f"device {self.id}"


@dataclass(frozen=True)
class PeerPair:
    """A device of one node and the same device of the next node (the last node's go to the first)."""

    local: NpuDevice
    peer: NpuDevice

    def __str__(self) -> str:
        return str(self.local)


def npu_devices(t: Target) -> list[NpuDevice]:
    return [NpuDevice(n.name, d, t.multi_node) for n in t.node_list() for d in t.npu_of(n).devices]


def peer_pairs(t: Target) -> list[PeerPair]:
    if not t.multi_node:
        return []
    nodes = t.node_list()
    pairs = []
    for i, n in enumerate(nodes):
        nxt = nodes[(i + 1) % len(nodes)]
        pairs += [PeerPair(NpuDevice(n.name, d, True), NpuDevice(nxt.name, d, True))
                  for d in t.npu_of(n).devices if d in t.npu_of(nxt).devices]
    return pairs
