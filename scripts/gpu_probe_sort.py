"""Where list_topk's wrong id on the H200 (2026-11-30) comes from: a probe for the next GPU pass.

    python3 scripts/gpu_probe_sort.py [--out FILE]     # on a GPU
    TRITON_INTERPRET=1 python3 scripts/gpu_probe_sort.py --device cpu   # the probe checked here

The H200 run of 2026-11-30 (triton 3.6) gave, for fp32 at k' = 40, one output slot of
kernels/list_scores.list_topk with the right score and the id of another kept class: the
high half of one packed int64 key with the low half of another. Three suspects, each timed
apart here with every num_warps the autotuner may pick:

1. `tl.sort` of int64 keys (ascending and descending) against torch.sort, at the block
   sizes list_topk uses, on keys packed as list_topk packs them (fp32 score bits made
   order-preserving in the high half, a class id in the low half);
2. `tl.maximum` of two int64 vectors followed by the sort (list_topk's merge step);
3. list_topk itself on the CUDA test's problem, one autotune config at a time, each dtype.

Prints one line per case and writes a JSON summary; exit status 1 if any case is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from triton_softmax.kernels import list_scores  # noqa: E402


@triton.jit
def _sort_probe(keys_ptr, other_ptr, asc_ptr, desc_ptr, merged_ptr, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    a = tl.load(keys_ptr + i)
    b = tl.load(other_ptr + i)
    tl.store(asc_ptr + i, tl.sort(a))
    tl.store(desc_ptr + i, tl.sort(a, descending=True))
    # list_topk's merge: best sorted descending, chunk sorted ascending, element-wise max
    best = tl.sort(a, descending=True)
    chunk = tl.sort(b)
    tl.store(merged_ptr + i, tl.sort(tl.maximum(best, chunk), descending=True))


def packed_keys(n: int, gen: torch.Generator) -> torch.Tensor:
    """Keys as list_topk packs them, with a few -inf scores (id 0) like its empty slots."""
    z = torch.randn(n, generator=gen) * 4
    z[torch.rand(n, generator=gen) < 0.2] = float("-inf")
    ids = torch.randint(0, 2**31 - 1, (n,), generator=gen)
    ids[torch.isinf(z)] = 0
    bits = z.view(torch.int32).to(torch.int64)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (ordered << 32) | ids


def probe_sort(device: str, trials: int) -> list[dict]:
    out = []
    gen = torch.Generator().manual_seed(0)
    for block in (16, 64, 256, 1024):
        for warps in (1, 4, 8):
            bad = 0
            for _ in range(trials):
                a, b = packed_keys(block, gen), packed_keys(block, gen)
                asc, desc, merged = (torch.empty(block, dtype=torch.int64) for _ in range(3))
                args = [t.to(device) for t in (a, b, asc, desc, merged)]
                _sort_probe[(1,)](*args, BLOCK=block, num_warps=warps)
                asc, desc, merged = (t.cpu() for t in args[2:])
                want_merged = torch.cat([a, b]).sort(descending=True).values[:block]
                bad += int(not torch.equal(asc, a.sort().values))
                bad += int(not torch.equal(desc, a.sort(descending=True).values))
                bad += int(not torch.equal(merged, want_merged))
            out.append(dict(case="sort_int64", block=block, num_warps=warps, wrong=bad))
            print(f"tl.sort int64 block={block:5d} warps={warps}: {bad} wrong of {3 * trials}")
    return out


def probe_list_topk(device: str) -> list[dict]:
    from tests.test_list_scores import SIZES, problem
    from triton_softmax.reference.list_scores import list_topk_ref

    out = []
    kernel = list_scores.list_topk_kernel
    configs = list(kernel.configs)
    for cfg in configs:
        kernel.configs = [cfg]
        kernel.cache.clear()
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for seed in range(4):
                h, w, b, order, offsets, lists = problem(dtype, True, seed=seed)
                for k in (4, 13, 40):
                    args = [t.to(device) for t in (h, w, b, order, offsets, lists)]
                    s, ids = list_scores.list_topk(*args, k, max(SIZES))
                    s_ref, ids_ref = list_topk_ref(
                        h.double(), w.double(), b.double(), order, offsets, lists, k, max(SIZES)
                    )
                    wrong = (ids.cpu() != ids_ref).nonzero().tolist()
                    dup = sum(
                        int(r[r >= 0].unique().numel() != int((r >= 0).sum()))
                        for r in ids.cpu().reshape(-1, ids.shape[-1])
                    )
                    rec = dict(
                        case="list_topk",
                        num_warps=cfg.num_warps,
                        dtype=str(dtype),
                        seed=seed,
                        k=k,
                        wrong_slots=len(wrong),
                        rows_with_duplicate_ids=dup,
                        first=wrong[:3],
                    )
                    out.append(rec)
                    if wrong:
                        print(f"list_topk warps={cfg.num_warps} {dtype} seed={seed} k={k}: {rec}")
    kernel.configs = configs
    kernel.cache.clear()
    print(f"list_topk: {sum(r['wrong_slots'] > 0 for r in out)} of {len(out)} cases wrong")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        p.error("on a CPU set TRITON_INTERPRET=1 (before Python starts)")
    rec = dict(
        device=torch.cuda.get_device_name() if args.device == "cuda" else "cpu (interpreter)",
        torch=torch.__version__,
        triton=triton.__version__,
        sort=probe_sort(args.device, args.trials),
        list_topk=probe_list_topk(args.device),
    )
    if args.out:
        args.out.write_text(json.dumps(rec, indent=1))
    wrong = sum(r["wrong"] for r in rec["sort"]) + sum(r["wrong_slots"] for r in rec["list_topk"])
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
