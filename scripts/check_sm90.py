"""Compile every autotune config of every Triton kernel for sm_90a (H100) without a GPU, and
print ptxas's register and spill report for each: a compile error is a GPU bug the
interpreter cannot see, and a tile config that spills is a bad default.

    python3 scripts/check_sm90.py [--no-bias]   # every kernel and config, bf16 and fp32
    python3 scripts/check_sm90.py --only list_topk,grad_hidden   # names starting so

Uses triton's own compiler and its bundled ptxas (ptxas-blackwell reads the PTX version
triton 3.9 emits). Arguments are specialised as the JIT does at launch: pointers, sizes and
row strides divisible by 16, the unit d-stride a constant; the launch-time constexprs are
those the launchers pick for a typical call (d = 128, K = 12, L = 8). Exit status 1 if any
compile fails. Run it with each triton you support (e.g. a venv with triton==3.6.0).
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

from triton_softmax.kernels import bucket_lookup as bl  # noqa: E402
from triton_softmax.kernels import bucket_tiles as bt  # noqa: E402
from triton_softmax.kernels import linear_ce as lce  # noqa: E402
from triton_softmax.kernels import linear_ce_chunked as lcc  # noqa: E402
from triton_softmax.kernels import list_scores as ls  # noqa: E402
from triton_softmax.kernels import list_tiles as lt  # noqa: E402
from triton_softmax.kernels import sampled_logits as sl  # noqa: E402
from triton_softmax.kernels import scatter_grad as sg  # noqa: E402
from triton_softmax.kernels import simhash as sh  # noqa: E402

HAS_BIAS = "--no-bias" not in sys.argv
ONLY = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else None
DIV16 = {"d", "N", "n", "stride_hm", "stride_wn", "stride_dzm"}
I32, I64 = "*i32", "*i64"


def jit_fn(kernel):
    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = kernel.fn
    return kernel


def tile_spec(dtype: str) -> dict:
    """Constexprs shared by the tl.dot kernels (linear_ce, bucket_tiles)."""
    return dict(
        HAS_BIAS=HAS_BIAS,
        SMOOTH=False,
        FILTER=False,
        DH_ATOMIC=True,
        DOT_DTYPE=tl.bfloat16 if dtype == "bf16" else tl.float32,
        INPUT_PRECISION="tf32" if dtype == "bf16" else "ieee",
        stride_hd=1,
        stride_wd=1,
        stride_dzn=1,
    )


TILE_PTRS = dict(
    h_ptr="IN",
    w_ptr="IN",
    b_ptr="IN",
    y_ptr=I64,
    off_ptr=I64,
    qcode_ptr=I32,
    kcode_ptr=I32,
    q_order_ptr=I32,
    run_end_ptr=I32,
    ids_ptr=I32,
    dz_ptr="IN",
)
CAND_PTRS = dict(h_ptr="IN", w_ptr="IN", b_ptr="IN", ids_ptr=I64, tgt_ptr=I64, ids_out_ptr=I64)
LOOKUP_PTRS = dict(
    codes_ptr=I32,
    x_ptr="IN",
    sorted_ids_ptr=I32,
    offsets_ptr=I64,
    out_ids_ptr=I64,
    out_coll_ptr=I32,
)
LOOKUP_PADS = dict(BIAS_MODE=1, K_PAD=16, L_PAD=8, B_PAD=32)
LIST_PTRS = dict(
    h_ptr="IN", w_ptr="IN", b_ptr="IN", order_ptr=I64, offsets_ptr=I64, lists_ptr=I64, ids_ptr=I64
)
LIST_TILE_PTRS = dict(
    h_ptr="IN",
    w_ptr="IN",
    b_ptr="IN",
    members_ptr=I64,
    start_ptr=I64,
    end_ptr=I64,
    query_ptr=I64,
    pair_ptr=I64,
    pos_ptr=I64,
)

# (name, kernel, constexprs beyond the config's, pointer element types, fp32 scalars)
KERNELS = [
    ("bucket_tile_lse_fwd", bt.bucket_tile_lse_fwd_kernel, {}, TILE_PTRS, ()),
    ("bucket_tile_lse_bwd", bt.bucket_tile_lse_bwd_kernel, {}, TILE_PTRS, ()),
    ("linear_ce_fwd", lce.linear_ce_fwd_kernel, {}, TILE_PTRS, ()),
    ("linear_ce_bwd", lce.linear_ce_bwd_kernel, {}, TILE_PTRS, ()),
    ("linear_ce_lse", lcc.linear_ce_lse_kernel, {}, TILE_PTRS, ()),
    ("linear_ce_dz", lcc.linear_ce_dz_kernel, {}, TILE_PTRS, ("target_coef", "smooth_coef")),
    (
        "simhash_codes",
        sh.simhash_codes_kernel,
        dict(BIAS_MODE=1, MIPS=True, BLOCK_T=8, K_PAD=16),
        dict(x_ptr="IN", codes_ptr=I32),
        ("bias_value",),
    ),
    (
        "lsh_lookup(hash)",
        bl.lsh_lookup_kernel,
        dict(HASH=True, BLOCK_Q=16, BLOCK_D=64, **LOOKUP_PADS),
        LOOKUP_PTRS,
        ("bias_value",),
    ),
    (
        "lsh_lookup(codes)",
        bl.lsh_lookup_kernel,
        dict(HASH=False, BLOCK_Q=1, BLOCK_D=16, **LOOKUP_PADS),
        LOOKUP_PTRS,
        ("bias_value",),
    ),
    (
        "sampled_logits_fwd",
        sl.sampled_logits_fwd_kernel,
        dict(HAS_BIAS=HAS_BIAS, BLOCK_D=128),
        CAND_PTRS,
        (),
    ),
    (
        "sampled_logits_bwd",
        sl.sampled_logits_bwd_kernel,
        dict(HAS_BIAS=HAS_BIAS, COMPUTE_DH=True, BLOCK_D=128),
        CAND_PTRS,
        (),
    ),
    # the launcher's blocks for k' = 63 (d = 128) and for k' = 1024 (the kept set widest)
    ("list_topk(k'=63)", ls.list_topk_kernel, dict(BLOCK_L=64, BLOCK_D=128), LIST_PTRS, ()),
    ("list_topk(k'=1024)", ls.list_topk_kernel, dict(BLOCK_L=1024, BLOCK_D=8), LIST_PTRS, ()),
    # the launcher's blocks at d = 512: k' = 64 (the smallest kept set) and k' = 512 (|S| of
    # the GPU sweep, the widest it keeps in registers)
    (
        "list_tile_topk(k'=64)",
        lt.list_tile_topk_kernel,
        dict(BLOCK_Q=16, BLOCK_L=64, BLOCK_D=64, TIE_ROW=False),
        LIST_TILE_PTRS,
        (),
    ),
    (
        "list_tile_topk(k'=512)",
        lt.list_tile_topk_kernel,
        dict(BLOCK_Q=16, BLOCK_L=512, BLOCK_D=32, TIE_ROW=False),
        LIST_TILE_PTRS,
        (),
    ),
    # the SimHash tables' scored lookup (index/list_tiles.search_table_tiles): int32 members
    # (the tables' sorted ids), ties by row; the launcher's blocks for |S| = 64 (k' = 32 =
    # max_per_bucket) and |S| = 512 (k' = 256) at d = 512
    (
        "list_tile_topk(tables k'=32)",
        lt.list_tile_topk_kernel,
        dict(BLOCK_Q=16, BLOCK_L=32, BLOCK_D=64, TIE_ROW=True),
        dict(LIST_TILE_PTRS, members_ptr=I32),
        (),
    ),
    (
        "list_tile_topk(tables k'=256)",
        lt.list_tile_topk_kernel,
        dict(BLOCK_Q=16, BLOCK_L=256, BLOCK_D=64, TIE_ROW=True),
        dict(LIST_TILE_PTRS, members_ptr=I32),
        (),
    ),
    ("grad_hidden", sl.grad_hidden_kernel, dict(BLOCK_D=128), CAND_PTRS, ()),
    ("scatter_grad_atomic", sg.scatter_grad_weight_atomic_kernel, {}, CAND_PTRS, ()),
    (
        "scatter_grad_segment",
        sg.scatter_grad_weight_segment_kernel,
        dict(BLOCK_E=16, BLOCK_D=128),
        dict(h_ptr="IN", order_ptr=I64, seg_ptr=I64),
        (),
    ),
]


def signature(fn, dtype: str, consts: dict, ptrs: dict, floats) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) of one compile; pointers default to fp32, "IN" is the
    input dtype, other scalars are i32."""
    consts = {a: v for a, v in consts.items() if a in fn.arg_names}
    missing = [p.name for p in fn.params if p.is_constexpr and p.name not in consts]
    if missing:
        raise ValueError(f"{fn.__name__}: no value for constexpr {missing}")
    sig = {}
    for a in fn.arg_names:
        if a in consts:
            sig[a] = "constexpr"
        elif a.endswith("_ptr"):
            t = ptrs.get(a, "*fp32")
            sig[a] = ("*bf16" if dtype == "bf16" else "*fp32") if t == "IN" else t
        else:
            sig[a] = "fp32" if a in floats else "i32"
    attrs = {
        (i,): [["tt.divisibility", 16]]
        for i, a in enumerate(fn.arg_names)
        if sig[a] != "constexpr" and (a.endswith("_ptr") or a in DIV16)
    }
    return sig, consts, attrs


def ptxas_report(kernel, dtype, config, extra, ptrs, floats, workdir) -> str:
    fn = jit_fn(kernel)
    consts = {**tile_spec(dtype), **config.kwargs, **extra}
    sig, consts, attrs = signature(fn, dtype, consts, ptrs, floats)
    compiled = triton.compile(
        ASTSource(fn, sig, consts, attrs),
        target=GPUTarget("cuda", 90, 64),
        options=dict(num_warps=config.num_warps, num_stages=config.num_stages),
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
    print(f"triton {triton.__version__}, target sm_90a, HAS_BIAS={HAS_BIAS}")
    failed = 0
    with tempfile.TemporaryDirectory() as workdir:
        for name, kernel, extra, ptrs, floats in KERNELS:
            if ONLY and not any(name.startswith(prefix) for prefix in ONLY):
                continue
            configs = getattr(kernel, "configs", None) or [triton.Config({}, num_warps=4)]
            for config in configs:
                for dtype in ("bf16", "fp32"):
                    label = f"{config.kwargs} w{config.num_warps} s{config.num_stages}"
                    try:
                        report = ptxas_report(kernel, dtype, config, extra, ptrs, floats, workdir)
                    except Exception as e:  # a compile error is the finding: print it, go on
                        failed += 1
                        msg = str(e).strip().splitlines()
                        report = f"FAILED {type(e).__name__}: {msg[0][:300] if msg else ''}"
                    print(f"{name:22s} {dtype} {label}: {report}", flush=True)
    print(f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
