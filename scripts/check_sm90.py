"""Compile every autotune config of the tile kernels for sm_90a (H100) without a GPU, and
print ptxas's register and spill report for each: a config that spills is a bad default.

    python3 scripts/check_sm90.py [--no-bias]   # bucket_tiles and linear_ce, bf16 and fp32

Uses triton's own compiler and its bundled ptxas (ptxas-blackwell reads the PTX version
triton 3.9 emits). Arguments are specialised as the JIT does at launch: pointers, sizes and
row strides divisible by 16, the unit d-stride a constant.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from triton_softmax.kernels import bucket_tiles as bt  # noqa: E402
from triton_softmax.kernels import linear_ce as lce  # noqa: E402

INT32_PTRS = {"qcode_ptr", "kcode_ptr", "q_order_ptr", "run_end_ptr", "ids_ptr"}
INT64_PTRS = {"y_ptr", "off_ptr"}
INPUT_PTRS = {"h_ptr", "w_ptr", "b_ptr"}
DIV16 = {"d", "N", "n", "stride_hm", "stride_wn"}


def jit_fn(kernel):
    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = kernel.fn
    return kernel


HAS_BIAS = "--no-bias" not in sys.argv


def signature(fn, dtype: str, block: tuple[int, int, int]):
    sig, consts = {}, {}
    for a in fn.arg_names:
        if a == "HAS_BIAS":
            consts[a] = HAS_BIAS
        elif a in ("SMOOTH", "FILTER"):
            consts[a] = False
        elif a == "DH_ATOMIC":
            consts[a] = True
        elif a == "DOT_DTYPE":
            consts[a] = tl.bfloat16 if dtype == "bf16" else tl.float32
        elif a == "INPUT_PRECISION":
            consts[a] = "tf32" if dtype == "bf16" else "ieee"
        elif a in ("BLOCK_M", "BLOCK_N", "BLOCK_K"):
            consts[a] = block[("BLOCK_M", "BLOCK_N", "BLOCK_K").index(a)]
        elif a in ("stride_hd", "stride_wd"):
            consts[a] = 1
        elif a in INPUT_PTRS:
            sig[a] = "*bf16" if dtype == "bf16" else "*fp32"
        elif a in INT32_PTRS:
            sig[a] = "*i32"
        elif a in INT64_PTRS:
            sig[a] = "*i64"
        elif a.endswith("_ptr"):
            sig[a] = "*fp32"
        else:
            sig[a] = "i32"
    unknown = [p.name for p in fn.params if p.is_constexpr and p.name not in consts]
    if unknown:
        raise ValueError(f"{fn.__name__}: no value for constexpr {unknown}")
    for a in consts:
        sig[a] = "constexpr"
    attrs = {
        (i,): [["tt.divisibility", 16]]
        for i, a in enumerate(fn.arg_names)
        if sig[a] != "constexpr" and (a.endswith("_ptr") or a in DIV16)
    }
    return sig, consts, attrs


def ptxas_report(kernel, dtype, row, workdir) -> str:
    bm, bn, bk, warps, stages = row
    fn = jit_fn(kernel)
    sig, consts, attrs = signature(fn, dtype, (bm, bn, bk))
    compiled = triton.compile(
        ASTSource(fn, sig, consts, attrs),
        target=GPUTarget("cuda", 90, 64),
        options=dict(num_warps=warps, num_stages=stages),
    )
    ptx = os.path.join(workdir, "k.ptx")
    with open(ptx, "w") as f:
        f.write(compiled.asm["ptx"])
    ptxas = os.path.join(os.path.dirname(triton.backends.nvidia.__file__), "bin", "ptxas-blackwell")
    out = subprocess.run(
        [ptxas, "-v", "--gpu-name=sm_90a", ptx, "-o", os.path.join(workdir, "k.cubin")],
        capture_output=True,
        text=True,
    )
    lines = [
        ln.split(":", 1)[-1].strip()
        for ln in (out.stdout + out.stderr).splitlines()
        if "registers" in ln or "spill" in ln
    ]
    return " | ".join(lines) + f" | smem {compiled.metadata.shared} B"


def main() -> int:
    kernels = [
        ("bucket_tile_lse_fwd", bt._bucket_tile_lse_fwd_kernel, bt._FWD_ROWS),
        ("bucket_tile_lse_bwd", bt._bucket_tile_lse_bwd_kernel, bt._BWD_ROWS),
        ("linear_ce_fwd", lce._linear_ce_fwd_kernel, lce._FWD_ROWS),
        ("linear_ce_bwd", lce._linear_ce_bwd_kernel, lce._BWD_ROWS),
    ]
    print(f"triton {triton.__version__}, target sm_90a, HAS_BIAS={HAS_BIAS}")
    with tempfile.TemporaryDirectory() as workdir:
        for name, kernel, rows in kernels:
            for dtype in ("bf16", "fp32"):
                for row in rows:
                    print(
                        f"{name:22s} {dtype} {row}: {ptxas_report(kernel, dtype, row, workdir)}",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
