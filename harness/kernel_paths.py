"""Kernel paths: the instances' matmul libraries capped to an ISA through their environment, and what kernels a
path really gets in an image. Read by the repeat and fidelity commands (commands/repeat.py, commands/fidelity.py).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

# Each path's cap for the instances' matmul libraries: torch's dispatch level, oneDNN's (vLLM's linear layers and
# torch's bf16 matmuls) and MKL's (torch's float32 matmuls). "avx2" is an AVX-512 machine's second path; "sse41"
# an AVX2-only machine's.
CAPS = {
    "default": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "sse41": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}
# What the instances' kernels are with that environment: one linear of the given dtype (float32 is the instances'),
# then torch's dispatch level. Run once per dtype, so that each run's MKL and oneDNN verbose lines are that dtype's.
KERNELS = ("import sys, torch\n"
           "x = torch.ones(256, 256, dtype=getattr(torch, sys.argv[1]))\n"
           "torch.nn.functional.linear(x, x)\n"
           "print('aten', torch.backends.cpu.get_cpu_capability(), 'amx', torch.cpu._is_amx_tile_supported())")


def capped_target(source: Path, isa: str, folder: Path) -> Path:
    """The target with the ISA cap in every instance's environment, written into folder."""
    data = yaml.safe_load(source.read_text())
    for x in data["instances"]:
        x["env"] = {**x.get("env", {}), **CAPS[isa]}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{source.stem}-{isa}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def kernels(image: str, env: dict[str, str], dtypes: tuple[str, ...] = ("float32", "bfloat16")) -> str:
    """torch's dispatch level, and for a linear of each dtype the ISA MKL or oneDNN reported running it, in the image
    under env, e.g. `aten AVX512 amx True; float32 mkl AVX-512+AMX; bfloat16 onednn brg_matmul:avx10_1_512_amx`."""
    verbose = {**env, "ONEDNN_VERBOSE": "1", "MKL_VERBOSE": "1"}
    parts, aten = [], None
    for dtype in dtypes:
        r = subprocess.run(["docker", "run", "--rm", *(f"--env={k}={v}" for k, v in verbose.items()),
                            image, "python3", "-c", KERNELS, dtype], capture_output=True, text=True, timeout=120)
        lines = r.stdout.splitlines()
        aten = aten or next((line for line in lines if line.startswith("aten ")), None)
        parts.append(f"{dtype} {kernel_of(lines) if r.returncode == 0 else f'? (exit {r.returncode})'}")
    return "; ".join([aten or "aten ?", *parts])


def kernel_of(lines: list[str]) -> str:
    """Which library ran the matmul and at what ISA, from MKL_VERBOSE's header and call lines (`mkl AVX-512+AMX`)
    and oneDNN's executed primitive (`onednn brg_matmul:avx10_1_512_amx`); neither: aten's own kernel ran it."""
    found = []
    header = next((m.group(1) for line in lines
                   if (m := re.match(r"MKL_VERBOSE .* architecture (.+?)(?: enabled processors)?, Lnx", line))), None)
    if header and any(re.match(r"MKL_VERBOSE [A-Z]+\(", line) for line in lines):
        found.append("mkl " + "+".join(re.findall(r"\(Intel\(R\) ([^)]+)\)", header)))
    found += [f"onednn {line.split(',')[6]}" for line in lines if line.startswith("onednn_verbose,v1,primitive,exec,")]
    return ", ".join(dict.fromkeys(found)) or "aten's own (neither mkl nor onednn ran it)"
