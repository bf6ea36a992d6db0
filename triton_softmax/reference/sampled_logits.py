"""The sampled-softmax estimator in plain PyTorch: the oracle for the kernels and the CPU path.

For example i with candidates j (ids c_ij, log-weights log w_ij, -inf for padding):

    z_ij   = h_i . W_{c_ij} + b_{c_ij}
    lse_i  = log sum_j w_ij exp(z_ij)          (= log Z-hat, the estimated partition function)
    loss_i = lse_i - z_{i,y_i}

Gradient of loss_i: d/dz_ij = w_ij exp(z_ij - lse_i) = p_ij, and -1 on the target logit. The
backward is written as "coefficients on rows": coef (N, M+1) over ids (N, M+1) = candidates
plus the target, so that

    dh_i          = sum_j coef_ij W_{ids_ij}
    dW[ids_ij]   += coef_ij h_i        (scatter-add: only candidate rows are touched)
    db[ids_ij]   += coef_ij

All arithmetic is fp32 (fp64 for fp64 inputs) whatever the input dtype.
"""

from __future__ import annotations

import warnings

import torch


def gather_rows(weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """weight[ids] for ids (N, M): (N, M, d), by index_select (faster than advanced
    indexing on CPU)."""
    return weight.index_select(0, ids.reshape(-1)).view(*ids.shape, weight.shape[1])


def row_dots(rows: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """(N, M) dot products of each row's gathered rows (N, M, d) with its h (N, d).

    As (N, 1, d) x (N, d, M): on a CPU this runs 1.9-3.0x faster than (N, M, d) x (N, d, 1)
    (1.2 vs 3.2 ms at N = 256, M = 65, d = 128; 64 vs 124 ms at 2 x 300,000 x 128; one
    thread; bench/results/row_dots_ab-20261201.json)."""
    return torch.bmm(h.unsqueeze(1), rows.transpose(1, 2)).squeeze(1)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def sampled_logits_fwd_ref(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    cand_ids: torch.Tensor,
    cand_logw: torch.Tensor,
    target: torch.Tensor,
    softcap: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example estimator loss and log Z-hat.

    hidden: (N, d); weight: (n, d); bias: (n,) or None; cand_ids: (N, M) int64;
    cand_logw: (N, M) float32; target: (N,) int64 in [0, n). softcap c > 0: every logit is
    c tanh(z / c) (Gemma-2-style soft-capping; twin only, the kernels do not implement it).
    Returns loss (N,) and lse (N,), both in the accumulation dtype (fp32, or fp64 for fp64).
    """
    acc = acc_dtype(hidden.dtype)
    h = hidden.to(acc)
    z = _candidate_logits(h, gather_rows(weight, cand_ids).to(acc), bias, cand_ids, softcap)
    z_t = _target_logit(h, weight[target].to(acc), bias, target, softcap)
    return _loss_lse(z, z_t, cand_ids, cand_logw, target)


def _loss_lse(z, z_t, cand_ids, cand_logw, target):
    """(loss, lse) from the candidates' logits z (N, M) and the target's z_t (N,)."""
    z_t = target_from_candidates(z, cand_ids, target, z_t)
    lse = torch.logsumexp(z + cand_logw.to(z.dtype), dim=1)
    return nan_at_inf_lse(lse - z_t, lse), lse


def sampled_logits_fwd_rows_ref(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    cand_ids: torch.Tensor,
    cand_logw: torch.Tensor,
    target: torch.Tensor,
    softcap: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sampled_logits_fwd_ref that also returns what its backward needs, so that
    sampled_logits_bwd_rows_ref neither gathers the rows nor multiplies them again:
    (loss (N,), lse (N,), rows (N, M+1, d) in weight's dtype, z (N, M+1) acc dtype), rows =
    weight[[cand_ids | target]] and z their (capped) logits, the target's last."""
    acc = acc_dtype(hidden.dtype)
    ids = torch.cat([cand_ids, target.unsqueeze(1)], dim=1)
    rows = gather_rows(weight, ids)
    z = _candidate_logits(hidden.to(acc), rows.to(acc), bias, ids, softcap)
    loss, lse = _loss_lse(z[:, :-1], z[:, -1], cand_ids, cand_logw, target)
    return loss, lse, rows, z


def nan_at_inf_lse(loss: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """NaN where lse = +inf, as torch's log_softmax gives (z - max with max = +inf): a row
    whose softmax includes a +inf logit has loss NaN on every path, not +inf."""
    return torch.where(lse == float("inf"), torch.full_like(loss, float("nan")), loss)


def target_from_candidates(
    z: torch.Tensor, cand_ids: torch.Tensor, target: torch.Tensor, z_t: torch.Tensor
) -> torch.Tensor:
    """The target's logit read from z (N, M) where the target is a candidate, else z_t (N,).

    The lse sums exactly these values, so a confident row's loss lse - z_y is 0 (as torch's)
    even where float32 logits near 1e30 make a separately reduced dot product differ from
    z's entry by ulps of 1e30 (~1e23)."""
    hit = cand_ids == target.unsqueeze(1)
    pos = hit.to(torch.uint8).argmax(dim=1, keepdim=True)
    return torch.where(hit.any(dim=1), z.gather(1, pos).squeeze(1), z_t)


def cap_logits(z: torch.Tensor, softcap: float) -> torch.Tensor:
    """c tanh(z / c), or z when softcap is 0."""
    return softcap * torch.tanh(z / softcap) if softcap else z


def _cap_slope(z_capped: torch.Tensor, softcap: float) -> torch.Tensor | float:
    """d(capped)/d(raw) = 1 - tanh^2 = 1 - (capped / c)^2."""
    return 1.0 - (z_capped / softcap).square() if softcap else 1.0


def _candidate_logits(h, rows, bias, cand_ids, softcap=0.0):
    """z (N, M) from h (N, d) and gathered rows (N, M, d), both in the accumulation dtype."""
    z = row_dots(rows, h)
    z = z + bias[cand_ids].to(z.dtype) if bias is not None else z
    return cap_logits(z, softcap)


def _target_logit(h, w_y, bias, target, softcap=0.0):
    z_t = (w_y * h).sum(dim=1)
    z_t = z_t + bias[target].to(z_t.dtype) if bias is not None else z_t
    return cap_logits(z_t, softcap)


def _coefficients(grad_loss, z, cand_logw, lse, softcap=0.0, z_t=None, target_grad=None):
    """[g p_ij | -g_t] (N, M+1) from the candidates' (capped) logits z (N, M): the softmax
    over candidates, then the target's -1, times the soft-cap slope of each logit (z_t: the
    target's capped logit, needed with softcap); target_grad: the target term's gradient
    (default g)."""
    g = grad_loss.to(lse.dtype).unsqueeze(1)
    g_t = g if target_grad is None else target_grad.to(lse.dtype).unsqueeze(1)
    p_part = g * torch.exp(z + cand_logw.to(lse.dtype) - lse.unsqueeze(1)) * _cap_slope(z, softcap)
    t_part = -g_t * (_cap_slope(z_t, softcap).unsqueeze(1) if softcap else 1.0)
    return torch.cat([p_part, t_part], dim=1)


def sampled_logits_coef_ref(
    grad_loss: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    cand_ids: torch.Tensor,
    cand_logw: torch.Tensor,
    target: torch.Tensor,
    lse: torch.Tensor,
    softcap: float = 0.0,
    target_grad: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward coefficients: (coef (N, M+1) acc dtype, ids (N, M+1) int64); see module doc."""
    acc = lse.dtype
    h = hidden.to(acc)
    z_t = _target_logit(h, weight[target].to(acc), bias, target, softcap) if softcap else None
    z = _candidate_logits(h, gather_rows(weight, cand_ids).to(acc), bias, cand_ids, softcap)
    coef = _coefficients(grad_loss, z, cand_logw, lse, softcap, z_t, target_grad)
    return coef, torch.cat([cand_ids, target.unsqueeze(1)], dim=1)


def sampled_logits_bwd_ref(
    grad_loss: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    cand_ids: torch.Tensor,
    cand_logw: torch.Tensor,
    target: torch.Tensor,
    lse: torch.Tensor,
    softcap: float = 0.0,
    target_grad: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(coef, ids, dh): sampled_logits_coef_ref and grad_hidden_ref with one gather of the rows."""
    acc = lse.dtype
    ids = torch.cat([cand_ids, target.unsqueeze(1)], dim=1)
    rows = gather_rows(weight, ids).to(acc)  # (N, M+1, d), gathered once for z and for dh
    h = hidden.to(acc)
    z_t = _target_logit(h, rows[:, -1], bias, target, softcap) if softcap else None
    z = _candidate_logits(h, rows[:, :-1], bias, cand_ids, softcap)
    coef = _coefficients(grad_loss, z, cand_logw, lse, softcap, z_t, target_grad)
    dh = torch.bmm(coef.unsqueeze(1), rows).squeeze(1)
    return coef, ids, dh


def sampled_logits_bwd_rows_ref(
    grad_loss: torch.Tensor,
    rows: torch.Tensor,
    z: torch.Tensor,
    cand_ids: torch.Tensor,
    cand_logw: torch.Tensor,
    target: torch.Tensor,
    lse: torch.Tensor,
    softcap: float = 0.0,
    target_grad: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sampled_logits_bwd_ref from the rows (N, M+1, d) and logits z (N, M+1) that
    sampled_logits_fwd_rows_ref kept: (coef, ids, dh), no gather, one product for dh."""
    coef = _coefficients(grad_loss, z[:, :-1], cand_logw, lse, softcap, z[:, -1], target_grad)
    dh = torch.bmm(coef.unsqueeze(1), rows.to(coef.dtype)).squeeze(1)
    return coef, torch.cat([cand_ids, target.unsqueeze(1)], dim=1), dh


def grad_hidden_ref(coef: torch.Tensor, ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """dh (N, d) acc dtype = sum_j coef_ij W_{ids_ij}."""
    return torch.bmm(coef.unsqueeze(1), gather_rows(weight, ids).to(coef.dtype)).squeeze(1)


def scatter_grad_weight_ref(
    coef: torch.Tensor, ids: torch.Tensor, hidden: torch.Tensor, n: int
) -> torch.Tensor:
    """Dense dW (n, d) acc dtype by scatter-add of coef_ij * h_i into rows ids_ij."""
    acc = coef.dtype
    d = hidden.shape[1]
    rows = (coef.unsqueeze(2) * hidden.to(acc).unsqueeze(1)).reshape(-1, d)
    dW = torch.zeros(n, d, dtype=acc, device=hidden.device)
    dW.index_add_(0, ids.reshape(-1), rows)
    return dW


def sparse_grad_weight_ref(
    coef: torch.Tensor,
    ids: torch.Tensor,
    hidden: torch.Tensor,
    n: int,
    dtype: torch.dtype,
    extra_ids: torch.Tensor | None = None,
    extra_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Coalesced sparse COO dW (n, d): one row per distinct candidate class, summed over the
    slots that hit it (zero coefficients dropped), marked coalesced, so SparseAdam / Adagrad /
    FusedSparseAdam skip their own sort and work on the distinct rows only.

    coef, ids: (N, M) acc dtype / int64; hidden: (N, d). extra_ids (M2,) int64 with
    extra_rows (M2, d): gradient rows computed elsewhere (the shared T's dense product),
    summed in. The slots are grouped by class with one stable sort, and the rows are one
    sparse (U, N) x (N, d) product: no (slots, d) intermediate. Dropping the zero slots makes
    nnz data-dependent (a host sync); a sparse gradient implies one anyway.
    """
    N, d = hidden.shape
    flat = coef.reshape(-1)
    keep = flat.nonzero().squeeze(1)  # flat slots (example * M + slot) with coef != 0
    row_ids, order = torch.sort(ids.reshape(-1)[keep], stable=True)
    keep = keep[order]
    uniq, counts = torch.unique_consecutive(row_ids, return_counts=True)
    crow = torch.zeros(uniq.numel() + 1, dtype=torch.int64, device=coef.device)
    torch.cumsum(counts, 0, out=crow[1:])
    cols = keep // max(coef.shape[1], 1)
    with warnings.catch_warnings():  # torch's notes on CSR tensors are not the user's:
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        # torch 2.11 (the H200 run) also warns that invariant checks are "implicitly"
        # disabled, though check_invariants=False says so explicitly
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly")
        A = torch.sparse_csr_tensor(
            crow, cols, flat[keep], (uniq.numel(), N), check_invariants=False
        )
    rows = A @ hidden.to(coef.dtype)
    if extra_ids is not None:
        uniq, inv = torch.unique(torch.cat([uniq, extra_ids]), return_inverse=True)
        summed = torch.zeros(uniq.numel(), d, dtype=rows.dtype, device=rows.device)
        rows = summed.index_add_(0, inv, torch.cat([rows, extra_rows.to(rows.dtype)]))
    # AccumulateGrad "steals" a sparse gradient with contiguous indices by rebuilding it
    # without its coalesced flag (torch 2.x, accumulate_grad.h case 1.2); with strided indices
    # it clones, which keeps the flag, so the optimizer does not sort the rows again.
    indices = torch.stack([uniq, uniq], 1).T[:1]  # (1, U), stride (1, 2)
    return torch.sparse_coo_tensor(
        indices, rows.to(dtype), (n, d), is_coalesced=True, check_invariants=False
    )


def scatter_grad_bias_ref(
    coef: torch.Tensor, ids: torch.Tensor, n: int, sparse: bool = False
) -> torch.Tensor:
    """db (n,) acc dtype: dense by index_add, or a coalesced sparse COO of the candidate rows."""
    if sparse:
        keep = coef != 0
        return torch.sparse_coo_tensor(
            ids[keep].unsqueeze(0), coef[keep], (n,), check_invariants=False
        ).coalesce()
    db = torch.zeros(n, dtype=coef.dtype, device=coef.device)
    db.index_add_(0, ids.reshape(-1), coef.reshape(-1))
    return db
