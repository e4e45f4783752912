"""harness/kernel_paths.py's report of the kernels a path really got, on verbose output recorded in the cpu-local image
(torch 2.13.0+cpu, oneMKL 2024.0, oneDNN 3.12) on an AVX-512 + AMX machine, uncapped and under its caps."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.kernel_paths import kernel_of

REC = Path(__file__).parent / "recordings" / "kernels"


@pytest.mark.parametrize("recording, kernel", [
    ("avx512-amx-float32.txt", "mkl AVX-512+AMX"),  # the instances' dtype: MKL's SGEMM
    ("avx512-amx-bfloat16.txt", "onednn brg_matmul:avx10_1_512_amx"),
    ("capped-avx2-float32.txt", "mkl AVX2"),  # MKL_ENABLE_INSTRUCTIONS=AVX2 took
    ("capped-sse41-float32.txt", "mkl SSE4.2"),
    ("capped-avx2-bfloat16.txt", "aten's own (neither mkl nor onednn ran it)"),  # oneDNN has no bf16 under AVX2
])
def test_kernel_of_names_the_library_and_isa_that_ran_the_matmul(recording, kernel):
    assert kernel_of((REC / recording).read_text().splitlines()) == kernel


def test_kernel_of_does_not_take_mkls_banner_for_a_call():
    header = (REC / "avx512-amx-float32.txt").read_text().splitlines()[:1]  # loaded, but no SGEMM line
    assert kernel_of(header) == "aten's own (neither mkl nor onednn ran it)"
