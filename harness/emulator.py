"""Render the cpu-local NPU emulator's run-time files from a target's `npu.emulator`.

The emulator in the image reads `state.json`; `/etc/hccn.conf` is what the host of a real NPU server
would have. Both come from the YAML at run time, so faults need no image rebuild.
"""

from __future__ import annotations

import json

from harness.config import Emulator

STATE_PATH = "/etc/npu-emulator/state.json"


def render_state(emu: Emulator) -> str:
    return json.dumps(emu.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def render_hccn_conf(emu: Emulator) -> str | None:
    """The hccn.conf a correctly configured server would hold, or None when the YAML says it is absent."""
    if not emu.hccn_conf:
        return None
    lines = []
    for dev_id, dev in sorted(emu.devices.items()):
        address = dev.conf_ip or dev.ip
        if address:
            lines += [f"address_{dev_id}={address}", f"netmask_{dev_id}={dev.netmask}"]
        if dev.netdetect:
            lines.append(f"netdetect_{dev_id}={dev.netdetect}")
        if dev.gateway:
            lines.append(f"gateway_{dev_id}={dev.gateway}")
        lines += [f"send_arp_status_{dev_id}=1", f"tls_enable_{dev_id}={dev.tls_switch}"]
    return "\n".join(lines) + "\n"
