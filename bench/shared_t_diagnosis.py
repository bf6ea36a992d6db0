"""Why one small uniform T shared by the batch trains worse than per-example T: measurements.

    python3 -m bench.shared_t_diagnosis [--out bench/results/shared-t-diagnosis-cpu-DATE.json]

1. unbiasedness (float64, small sizes): mean over draws of Z-hat_i per row and of the
   batch-summed weight gradient of sum_i Z-hat_i, for each scheme, against the exact values
   (sum_j e^{z_ij} and sum_i e^{z_ij} h_i). Both schemes are unbiased: no estimator bug.
2. per-class gradient variance (float64): the batch loss's gradient w.r.t. one class's
   weight row for classes outside every S, over many draws; the ratio of its variance under
   a shared T to per-example T at the same |T| is about N (one draw serves every row).
3. coverage at the pycode task's sizes (n = 120,089, N = 1,024, |S| = |T| = 64): how many
   distinct classes outside a row's S get any gradient in one step, and how many steps pass
   between two pushes on one such class.
4. what Adam makes of it: Adam (beta 0.9 / 0.999, lr 1) on one coordinate whose gradient has
   mean 1 per step, either as rare spikes (a shared T: probability q = |T| / n a step, size
   1 / q) or as Binomial(N |T|, 1/n) small pieces (per-example T). Adam normalises each
   coordinate by its recent RMS, so a spike that comes once per 1 / q steps moves the row
   about lr * (1 - beta1)^-1 * sqrt(1 - beta2)^-1... at most ~31 lr whatever its size, where
   the same expected gradient spread over steps moves it ~lr per step: the importance weight
   n / |T| meant to make up for the rare draw is divided away. Also SparseAdam (moments kept
   between hits).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform

import torch

from triton_softmax import sampled_softmax_from_candidates


def _problem(n, N, d, R, seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, d, generator=g, dtype=torch.float64) * 0.5
    W = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.5
    y = torch.randint(n, (N,), generator=g)
    ret = (h @ W.T).topk(R, 1).indices
    return h, W, y, ret


def unbiasedness(n=300, N=32, d=8, R=7, T=8, draws=3000, seed=0) -> dict:
    """Mean of Z-hat and of d(sum_i Z-hat_i)/dW over draws vs exact, per scheme (float64)."""
    h, W, y, ret = _problem(n, N, d, R, seed)
    ez = (h @ W.T).exp()
    Z = ez.sum(1)
    dW_exact = ez.T @ h  # d(sum_i Z_i)/dW_j = sum_i e^{z_ij} h_i
    out = {}
    for scheme in ("per_example", "shared_samples"):
        gen = torch.Generator().manual_seed(seed + 1)
        zs = torch.zeros(N, dtype=torch.float64)
        gs = torch.zeros(n, d, dtype=torch.float64)
        zsq = torch.zeros(N, dtype=torch.float64)
        for _ in range(draws):
            Wp = W.clone().requires_grad_(True)
            loss = sampled_softmax_from_candidates(
                h, Wp, y, ret, num_uniform=T, reduction="none", scheme=scheme, generator=gen
            )
            zhat = (loss + (h * Wp[y]).sum(1)).exp()  # Z-hat_i = exp(loss_i + z_iy)
            zhat.sum().backward()
            zs += zhat.detach()
            zsq += zhat.detach() ** 2
            gs += Wp.grad
        mean = zs / draws
        se = ((zsq / draws - mean**2).clamp_min(0) / draws).sqrt()
        gmean = gs / draws
        out[scheme] = dict(
            max_z_rel_err=float(((mean - Z).abs() / Z).max()),
            max_z_err_in_se=float(((mean - Z).abs() / se.clamp_min(1e-300)).max()),
            grad_rel_err=float((gmean - dW_exact).norm() / dW_exact.norm()),
        )
    out["sizes"] = dict(n=n, N=N, d=d, S=R + 1, T=T, draws=draws, dtype="float64")
    return out


def grad_variance(n=2000, N=256, d=8, R=7, T=8, draws=300, seed=0) -> dict:
    """Variance over draws of the batch loss's gradient rows of classes outside every S."""
    h, W, y, ret = _problem(n, N, d, R, seed)
    in_s = torch.zeros(n, dtype=torch.bool)
    in_s[ret.reshape(-1)] = True
    in_s[y] = True
    out_ids = (~in_s).nonzero().squeeze(1)
    res = {}
    for scheme in ("per_example", "shared_samples"):
        gen = torch.Generator().manual_seed(seed + 2)
        s1 = torch.zeros(out_ids.numel(), d, dtype=torch.float64)
        s2 = torch.zeros_like(s1)
        pushed = 0.0
        for _ in range(draws):
            Wp = W.clone().requires_grad_(True)
            loss = sampled_softmax_from_candidates(
                h, Wp, y, ret, num_uniform=T, reduction="sum", scheme=scheme, generator=gen
            )
            loss.backward()
            gr = Wp.grad[out_ids]
            s1 += gr
            s2 += gr**2
            pushed += float((gr.abs().sum(1) > 0).sum())
        mean = s1 / draws
        var = (s2 / draws - mean**2).sum(1)
        res[scheme] = dict(
            mean_var=float(var.mean()),
            classes_pushed_per_step=pushed / draws,
            mean_grad_norm=float(mean.norm(dim=1).mean()),
        )
    res["variance_ratio_shared_over_per_example"] = (
        res["shared_samples"]["mean_var"] / res["per_example"]["mean_var"]
    )
    res["sizes"] = dict(n=n, N=N, d=d, S=R + 1, T=T, draws=draws, outside_s=int(out_ids.numel()))
    return res


def coverage(n=120_089, N=1024, S=64, T=64, shared_sizes=(64, 1024), seed=0) -> dict:
    """Distinct classes outside a row's S with a gradient in one step, per scheme."""
    g = torch.Generator().manual_seed(seed)
    # S from a Zipf-like head: rows share most of their S (frequent classes), as on code
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    q = 1.0 / ranks
    s_ids = torch.multinomial(q.expand(N, -1).float(), S, replacement=False, generator=g)
    in_any_s = torch.zeros(n, dtype=torch.bool)
    in_any_s[s_ids.reshape(-1)] = True
    per_ex = torch.randint(n, (N, T), generator=g)  # complement draws: S is 0.05% of n
    pe_classes = torch.unique(per_ex[~in_any_s[per_ex]]).numel()
    out = dict(
        n=n,
        N=N,
        S=S,
        T=T,
        union_of_S=int(in_any_s.sum()),
        per_example=dict(classes_pushed=pe_classes, steps_between_pushes=n / (N * T)),
    )
    for K in shared_sizes:
        t = torch.randint(n, (K,), generator=g)
        out[f"shared_T{K}"] = dict(
            classes_pushed=int(torch.unique(t[~in_any_s[t]]).numel()), steps_between_pushes=n / K
        )
    return out


def adam_push(n=120_089, N=1024, T=64, shared_sizes=(64, 1024), steps=20_000, seed=0) -> dict:
    """Total displacement of one coordinate under Adam / SparseAdam with lr = 1, gradient of
    mean 1 per step: shared-T spikes vs per-example pieces (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    series = []
    for K in shared_sizes:
        q = K / n
        series.append((f"shared_T{K}", (torch.rand(steps, generator=g) < q).double() / q))
    lam = N * T / n
    per_ex = torch.poisson(torch.full((steps,), lam, dtype=torch.float64), generator=g) / lam
    series.append(("per_example", per_ex))
    res = {}
    for name, grads in series:
        for opt in ("adam", "sparse_adam"):
            m = v = 0.0
            x = 0.0
            t = 0
            for k in range(steps):
                gk = float(grads[k])
                if opt == "sparse_adam" and gk == 0.0:
                    t += 1  # SparseAdam's step count is per tensor; this row is untouched
                    continue
                t += 1
                m = 0.9 * m + 0.1 * gk
                v = 0.999 * v + 0.001 * gk * gk
                mh = m / (1 - 0.9**t)
                vh = v / (1 - 0.999**t)
                x -= mh / (vh**0.5 + 1e-8)
            res[f"{name}/{opt}"] = dict(displacement_per_step=-x / steps)
    res["note"] = (
        "plain gradient descent would move 1.0 per step in both cases (the expected "
        "gradient is 1 per step); Adam with a steady gradient moves 1.0 per step"
    )
    res["sizes"] = dict(n=n, N=N, T=T, steps=steps)
    return res


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f", {os.cpu_count()} vCPUs"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser()
    date = datetime.date.today().strftime("%Y%m%d")
    p.add_argument("--out", default=f"bench/results/shared-t-diagnosis-cpu-{date}.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    rec = dict(
        kind="shared_t_diagnosis",
        machine=_cpu_model(),
        torch=torch.__version__,
        load_start=list(os.getloadavg()),
        unbiasedness=unbiasedness(),
        grad_variance=grad_variance(),
        coverage=coverage(),
        adam_push=adam_push(),
        load_end=list(os.getloadavg()),
    )
    with open(args.out, "w") as fh:
        json.dump(rec, fh, indent=1)
    print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
