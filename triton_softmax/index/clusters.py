"""k-means lists over the class rows (an IVF index in PyTorch), scored by exact rerank.

Build: every selectable row x = [w, b] (centred: q . mu is the same for every class, so
subtracting the mean row changes no query's ranking) becomes a unit key, either
  - "mips": [x, sqrt(M^2 - |x|^2)] / M with M = max |x| (all keys on one sphere, and the
    query [h, 1, 0] scores every key by its logit / M), or
  - "spherical": x / |x| (directions only),
and spherical k-means (Lloyd on cosines, on a subsample at the first build) splits the keys
into lists; lists over `balance` x the mean size are split again (sub-k-means, then equal
chunks), so no query reads a huge list. A query scores the list centroids (the mean key of
each list, bias coordinate included), reads its `nprobe` best lists, and the union is scored
with exact logits under the live weights (rerank.py); search keeps the k best.

Refresh: `build` on an index that is already built warm-starts from its centroids and runs
`refresh_iters` Lloyd iterations over all rows (torch ops on the weights' device);
`update_rows` (partial_refresh) re-assigns only the changed rows to centroids that stay where
they were: an approximation of the full refresh (the SimHash tables' is exact). Captured mass
of S 0.428 vs 0.437 with full warm refreshes, the same P@1, on a CPU at n = 20,000
(bench/results/partial-refresh-clusters-cpu-20261207.json).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .. import nonfinite as _nf
from ..checks import check_int_option
from .base import Snapshot
from .kmeans import assign_nearest, balance_lists, lists_csr, spherical_lloyd
from .list_tiles import search_list_tiles
from .rerank import check_rows, nonfinite_class, pad_short_rows, rerank_union, seeded, top_k_ids

MODES = ("mips", "spherical")
SCORE_BUFFER = 1 << 23  # (query, list, member) scores per chunk of a CPU search (32 MB)
TILE_SCORES = 1 << 25  # (query, probe, kept) candidates per chunk on CUDA (~1 GB in all)
POINTS_PER_LIST = 64  # subsample for the first build, as FAISS's k-means
NORM_HEADROOM = 1.05  # M with room for rows to grow before update_rows must rebuild
# live_rerank=None: a copy when the rows are on a CPU and the copy takes at most this many bytes
AUTO_COPY_BYTES = 1 << 32


def default_num_lists(n: int) -> int:
    """About sqrt(n) lists (343 at n = 117,659; FAISS IVF's nlist), at most n / 8."""
    return int(max(1, min(n // 8, round(math.sqrt(n)))))


def default_nprobe(num_lists: int) -> int:
    """Lists read per query: 16 (about 5% of the classes at n = 117,659, as FAISS's nprobe)."""
    return int(max(1, min(num_lists, 16)))


def copy_rows_by_default(weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """live_rerank=None's rule: score the lists from a copy when the rows are on a CPU (live
    gathers cost 2x the search there: 348 vs 176 ms at n = 1e6) and the copy takes at most
    AUTO_COPY_BYTES; live rows on CUDA, where the list-tile kernel gathers them."""
    cols = weight.shape[1] + (1 if bias is not None else 0)
    return not weight.is_cuda and weight.shape[0] * cols * 4 <= AUTO_COPY_BYTES


class ClusterIndex(Snapshot):
    """Balanced k-means lists; search = exact rerank of the union of the best `nprobe` lists.

    dim: d of the rows; num_lists: None = default_num_lists(n); nprobe: None =
    default_nprobe(num_lists); mode: "mips" | "spherical" keys; center: subtract the mean row;
    iters: Lloyd iterations of the first build, refresh_iters of later builds; balance: lists
    over balance x the mean size are split; validate: raise on non-finite rows; live_rerank:
    score the lists with the live weights (False: with the copy taken at build, as FAISS does;
    None: decided at each build by copy_rows_by_default).
    """

    def __init__(
        self,
        dim: int,
        num_lists: int | None = None,
        nprobe: int | None = None,
        mode: str = "spherical",
        center: bool = True,
        iters: int = 8,
        refresh_iters: int = 2,
        balance: float = 2.0,
        seed: int = 0,
        validate: bool = False,
        live_rerank: bool | None = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if num_lists is not None:
            check_int_option("num_lists", num_lists, 1)
        if nprobe is not None:
            check_int_option("nprobe", nprobe, 1)
        check_int_option("iters", iters, 0)
        check_int_option("refresh_iters", refresh_iters, 0)
        if not balance > 1.0:
            raise ValueError(f"balance must be > 1, got {balance!r}")
        self.dim, self.num_lists, self.nprobe, self.mode = dim, num_lists, nprobe, mode
        self.center, self.iters, self.refresh_iters = center, iters, refresh_iters
        self.balance, self.seed, self.validate = balance, seed, validate
        self.live_rerank_option = live_rerank
        self.live_rerank = live_rerank is not False  # resolved at build when None
        self.n = 0
        self.centroids: torch.Tensor | None = None  # (c, D) unit keys-space centroids
        self.weight: torch.Tensor | None = None  # the live weights (a view), for the rerank
        self.bias: torch.Tensor | None = None
        self.num_excluded = 0  # rows left out (non-finite weight, masked bias)
        self.any_nonfinite: torch.Tensor | None = None  # added to every search (nonfinite.py)
        self.first_nonfinite: torch.Tensor | None = None
        # live_rerank=False: the rows in list order, taken at build (_copy_rows)
        self.rows_copy: torch.Tensor | None = None  # CUDA: (m, d) and bias_copy (m,)
        self.bias_copy: torch.Tensor | None = None
        self.rows_copy_t: torch.Tensor | None = None  # CPU: (rows_dim, m), bias last

    @property
    def built(self) -> bool:
        return self.centroids is not None and self.weight is not None

    # ---- keys ----------------------------------------------------------------------------
    def _rows(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = weight.detach().float()
        if bias is not None:
            x = torch.cat([x, bias.detach().float().unsqueeze(1)], dim=1)
        return x

    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        x = x - self.mu
        if self.mode == "spherical":
            return torch.nn.functional.normalize(x, dim=1)
        sq = (x * x).sum(dim=1)
        extra = (self.max_norm**2 - sq).clamp_min(0).sqrt().unsqueeze(1)
        return torch.cat([x, extra], dim=1) / self.max_norm

    # ---- protocol ------------------------------------------------------------------------
    @torch.no_grad()
    def build(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> ClusterIndex:
        if weight.shape[1] != self.dim:
            raise ValueError(f"weight has d={weight.shape[1]}, index was made for d={self.dim}")
        ok = check_rows(weight, bias, self.validate)
        self.any_nonfinite, self.first_nonfinite = nonfinite_class(weight, bias)
        rows = ok.nonzero().flatten()
        x = self._rows(weight, bias)
        if rows.numel() < x.shape[0]:  # leave out the rows no search may return
            x = x[rows]
        warm = self.built and self.n == weight.shape[0] and (bias is None) == (self.bias is None)
        self.weight = weight.detach()
        self.bias = bias.detach() if bias is not None else None
        self.n = weight.shape[0]
        if self.live_rerank_option is None:
            self.live_rerank = not copy_rows_by_default(weight, bias)
        self.num_excluded = int(self.n - rows.numel())
        self.has_bias = bias is not None
        m = rows.numel()
        if m == 0:  # nothing selectable: searches pad from the exact pass (all -1)
            self.rows = rows
            self.centroids = torch.zeros(1, x.shape[1] + 1, device=weight.device)
            self.route = torch.zeros(1, x.shape[1], device=weight.device)
            self.order = rows
            self.offsets = torch.zeros(2, dtype=torch.int64, device=weight.device)
            return self
        self.mu = x.mean(dim=0) if self.center else torch.zeros_like(x[0])
        self.max_norm = (x - self.mu).norm(dim=1).max().clamp_min(1e-12) * NORM_HEADROOM
        keys = self._keys(x)
        restore, self._restore = getattr(self, "_restore", None), None
        if restore is not None and restore[1].numel() == m:  # a checkpoint's lists
            self.rows = rows
            self.centroids = restore[0].to(keys.device)
            self._set_lists(keys, restore[1].to(keys.device))
            return self
        gen = torch.Generator().manual_seed(self.seed)
        c = min(self.num_lists or default_num_lists(m), m)
        train = keys  # Lloyd runs on a subsample (as FAISS's k-means); one full assignment
        if m > POINTS_PER_LIST * c:
            pick = torch.randperm(m, generator=gen)[: POINTS_PER_LIST * c]
            train = keys[pick.to(keys.device)]
        if warm and self.centroids.shape[1] == keys.shape[1] and self.centroids.shape[0] >= c:
            # warm start from the first c centroids: the lists split by _balance at the last
            # build are split again from scratch, so the number of lists does not creep up
            # .to: the module may have moved to another device since the last build
            start = self.centroids[:c].to(keys.device, copy=True)
            cent = spherical_lloyd(train, start, self.refresh_iters, gen)
        else:
            init = torch.randperm(train.shape[0], generator=gen)[:c].to(keys.device)
            cent = spherical_lloyd(train, train[init].clone(), self.iters, gen)
        assign = assign_nearest(keys, cent)
        cent, assign = balance_lists(keys, cent, assign, gen, self.balance)
        self.rows = rows
        self.centroids = cent
        self._set_lists(keys, assign)
        return self

    def _set_lists(self, keys: torch.Tensor, assign: torch.Tensor) -> None:
        c = self.centroids.shape[0]
        self.assign = assign
        order, self.offsets = lists_csr(assign, c)
        self.order = self.rows[order]  # class ids, list by list
        sizes = self.offsets[1:] - self.offsets[:-1]
        self.max_list = int(sizes.max()) if c else 0
        # route queries by the mean key of each list, in the rows' coordinates ([w, b]):
        # q . mean(x - mu) ranks lists by the average logit of their members
        sums = torch.zeros(c, keys.shape[1], device=keys.device).index_add_(0, assign, keys)
        mean_key = sums / sizes.clamp_min(1).unsqueeze(1).float()
        self.route = mean_key[:, : self.rows_dim]
        self.rows_copy = self.bias_copy = self.rows_copy_t = None
        if not self.live_rerank:
            self._copy_rows()

    def _copy_rows(self) -> None:
        """Copy the selectable rows in list order (the search then reads them contiguously):
        (m, d) rows_copy and (m,) bias_copy on CUDA, as ops.list_topk reads them; on a CPU
        one (rows_dim, m) rows_copy_t with the bias as its last row, so a list is a column
        block: (queries x rows_dim) @ (rows_dim x list) ran 1.4-1.9x faster there than
        list rows @ queries.T (n = 1e6, d = 128, about 4 queries per list, 1 thread)."""
        rows = self.weight.index_select(0, self.order).float()
        bias = self.bias.index_select(0, self.order).float() if self.has_bias else None
        if rows.is_cuda:
            self.rows_copy, self.bias_copy = rows, bias
        else:
            cols = rows.T if bias is None else torch.cat([rows.T, bias.unsqueeze(0)])
            self.rows_copy_t = cols.contiguous()

    def _copied_rows(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """((m, d) rows, (m,) bias or None) of the copy, views of the layout this device keeps."""
        if self.rows_copy_t is None:
            return self.rows_copy, self.bias_copy
        t = self.rows_copy_t
        return t[: self.dim].T, (t[self.dim] if self.has_bias else None)

    @property
    def rows_dim(self) -> int:
        return self.dim + (1 if self.has_bias else 0)

    @torch.no_grad()
    def update_rows(
        self, weight: torch.Tensor, bias: torch.Tensor | None, rows: torch.Tensor
    ) -> bool:
        """Re-assign `rows` to their nearest centroid (keys under the stored mean and M; the
        centroids do not move, so this approximates a warm build, see the module docstring).
        False, changing nothing, when a row outgrew M, a row is not selectable, or the row
        set changed (the caller rebuilds)."""
        if not self.built or weight.shape[0] != self.n or self.rows.numel() != self.n:
            return False
        rows = rows.to(weight.device).long()
        ok = check_rows(weight[rows], bias[rows] if bias is not None else None, self.validate)
        if not bool(ok.all()):
            return False
        x = self._rows(weight[rows], bias[rows] if bias is not None else None)
        if bool(((x - self.mu).norm(dim=1) > self.max_norm).any()):
            return False
        keys_rows = self._keys(x)
        assign = self.assign.clone()
        assign[rows] = assign_nearest(keys_rows, self.centroids)  # self.rows is arange(n) here
        self.weight = weight.detach()
        self.bias = bias.detach() if bias is not None else None
        keys = self._keys(self._rows(self.weight, self.bias))
        self._set_lists(keys, assign)
        return True

    @property
    def effective_nprobe(self) -> int:
        """Lists a search reads: nprobe (None: default_nprobe), at most the lists built."""
        c = self.centroids.shape[0] if self.centroids is not None else 1
        return int(min(self.nprobe or default_nprobe(c), c))

    def set_nprobe(self, nprobe: int | None) -> None:
        """Lists read per query from now on (None: default_nprobe); target_mass tunes it."""
        if nprobe is not None:
            check_int_option("nprobe", nprobe, 1)
        self.nprobe = nprobe

    def probe_lists(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, p) int64: each query's `nprobe` best lists by centroid score."""
        q = hidden.detach().float()
        if self.has_bias:
            q = torch.cat([q, q.new_ones(q.shape[0], 1)], dim=1)
        scores = q @ self.route.T
        p = min(self.nprobe or default_nprobe(self.centroids.shape[0]), scores.shape[1])
        return scores.topk(p, dim=1).indices

    def union(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, p x largest list) int64: every class of the query's best lists, -1 padded."""
        if not self.built:
            raise RuntimeError("ClusterIndex.union before build()")
        N = hidden.shape[0]
        if self.order.numel() == 0 or N == 0:
            return torch.full((N, 1), -1, dtype=torch.int64, device=hidden.device)
        lists = self.probe_lists(hidden)
        start = self.offsets[lists]
        end = self.offsets[lists + 1]
        pos = start.unsqueeze(2) + torch.arange(self.max_list, device=start.device)
        ok = pos < end.unsqueeze(2)
        ids = self.order[torch.where(ok, pos, torch.zeros_like(pos))]
        ids = torch.where(ok, ids, torch.full_like(ids, -1)).reshape(N, -1)
        return _nf.add_nonfinite_class(ids, self.any_nonfinite, self.first_nonfinite)

    def search(
        self, hidden: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """search_lists, with the first non-finite class row (if any) in every row's last
        slot (nonfinite.py: the rule every index keeps); short rows padded (rerank.seeded)."""
        top = self.search_lists(hidden, k, generator)
        return _nf.add_nonfinite_class(top, self.any_nonfinite, self.first_nonfinite)

    def search_lists(
        self, hidden: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(N, k) int64: the k best classes of the probed lists by exact logit, best first;
        k valid ids whenever k classes are selectable (short rows: rerank.rerank_union pads).

        On a CPU: _list_scores, each probed list scored once for all the queries that probe
        it (its rows gathered from the live weights when live_rerank, else sliced from the
        copy taken at build), not query by query: a per-query gather of the union costs as
        much as the full product there; then one top-k per row, queries in chunks of
        SCORE_BUFFER scores. On CUDA: _search_tiles, fixed shapes and no host read."""
        if not self.built:
            raise RuntimeError("ClusterIndex.search before build(): call build(weight, bias)")
        hidden = hidden.detach()
        N = hidden.shape[0]
        tiles = hidden.is_cuda and N > 0 and self.order.numel() > 0  # pads where it draws
        generator = seeded(generator, self.seed, hidden.device if tiles else "cpu")
        if N == 0 or self.order.numel() == 0:
            empty = torch.full((N, 1), -1, dtype=torch.int64, device=hidden.device)
            return rerank_union(hidden, self.weight, self.bias, empty, k, generator)
        lists = self.probe_lists(hidden)
        if tiles:
            return self._search_tiles(hidden, lists, k, generator)
        # N x p x L scores at a time (one 32 MB buffer), never one (N, classes) product; equal
        # chunks, as few as fit: each chunk reads every list it probes again
        per_query = max(1, lists.shape[1] * self.max_list)
        chunks = -(-N * per_query // SCORE_BUFFER)
        step = -(-N // chunks)
        chunk = (self._top_of_lists(hidden[i : i + step], lists[i : i + step], k)
                 for i in range(0, N, step))  # fmt: skip
        top = torch.cat(list(chunk))
        short = (top < 0).any(dim=1)
        if bool(short.any()):  # pad from uniform / the exact pass (rerank.rerank_union)
            rows = short.nonzero().flatten()
            top[rows] = rerank_union(hidden[rows], self.weight, self.bias, top[rows], k, generator)
        return top

    def _search_fixed(
        self,
        hidden: torch.Tensor,
        lists: torch.Tensor,
        k: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The previous fixed-shape path (ops.list_topk per (query, list); not used on CUDA
        since its H200 fault, kept with its tests until a GPU run retires or clears it)."""
        from .. import ops

        N = hidden.shape[0]
        if self.live_rerank:
            z, ids = ops.list_topk(
                hidden, self.weight, self.bias, self.order, self.offsets, lists, k, self.max_list
            )
        else:  # rows_copy is in list order: the kernel's "class ids" are positions there
            at = torch.arange(self.order.numel(), device=self.order.device)
            rows, bias = self._copied_rows()
            z, pos = ops.list_topk(hidden, rows, bias, at, self.offsets, lists, k, self.max_list)
            ids = torch.where(pos >= 0, self.order[pos.clamp_min(0)], pos)
        s, top = top_k_ids(z.view(N, -1), ids.view(N, -1), k)
        return pad_short_rows(hidden, self.weight, self.bias, top, s, self.rows, k, generator)

    def _search_tiles(
        self,
        hidden: torch.Tensor,
        lists: torch.Tensor,
        k: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """search_lists in fixed shapes with no host read (the CUDA path, any device runs it):
        list_tiles.search_list_tiles scores each probed list once per tile of the queries
        that probe it on tensor cores and keeps (N, p, k') candidates, merged to the k best;
        queries in chunks of at most TILE_SCORES candidates; short rows padded by
        rerank.pad_short_rows. Ties: the smaller class id first."""
        N, p = lists.shape
        if self.live_rerank:
            rows, bias, members = self.weight, self.bias, self.order
        else:  # the copy is in list order: its positions are the members
            rows, bias = self._copied_rows()
            members = torch.arange(self.order.numel(), device=self.order.device)
        step = max(1, TILE_SCORES // max(1, p * min(k, self.max_list)))
        s, top = [], []
        for i in range(0, N, step):
            si, ti = search_list_tiles(
                hidden[i : i + step], rows, bias, members, self.offsets, self.order,
                lists[i : i + step], k, self.max_list,
            )  # fmt: skip
            s.append(si)
            top.append(ti)
        s, top = torch.cat(s), torch.cat(top)
        return pad_short_rows(hidden, self.weight, self.bias, top, s, self.rows, k, generator)

    def _list_scores(self, hidden: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
        """(N, p x L) float32: the exact logit of every member of every probed list, -inf in
        empty slots and for NaN logits; L = the largest list, slot s*L + j of row q is member j
        of list lists[q, s].

        One matrix product per probed list (its rows read once for all the queries that
        probe it), copied into its (query, slot) rows of the one buffer; one topk over the row
        then replaces a topk per list, which cost more than the products (profiled at n =
        1.2e5 and 1e6). search_lists bounds N x p x L by chunking the queries."""
        N, p = lists.shape
        L = self.max_list
        flat = lists.flatten()
        by_list = torch.argsort(flat, stable=True)  # (query, slot) pairs grouped by list
        pair_q = torch.div(by_list, p, rounding_mode="floor")
        z = torch.full((N * p, L), float("-inf"), device=hidden.device)
        counts = torch.bincount(flat, minlength=self.centroids.shape[0]).tolist()
        offs = self.offsets.tolist()
        h = hidden.float()
        copy = None
        if not self.live_rerank:  # CPU builds keep rows_copy_t; a CUDA build's copy, transposed
            copy = self.rows_copy_t
            if copy is None:
                rows, bias = self._copied_rows()
                copy = rows.T if bias is None else torch.cat([rows.T, bias.unsqueeze(0)])
        if copy is not None and self.has_bias:  # the copy's last row is the bias
            h = torch.cat([h, h.new_ones(N, 1)], dim=1)
        lo = 0
        for lst, cnt in enumerate(counts):
            if cnt == 0:
                continue
            a, b = offs[lst], offs[lst + 1]
            if a < b:
                hq = h.index_select(0, pair_q[lo : lo + cnt])
                if copy is not None:
                    zl = torch.mm(hq, copy[:, a:b])
                else:
                    members = self.order[a:b]
                    w = self.weight.index_select(0, members).float()
                    # rows x queries: the list's rows as the left operand ran 1.7x faster
                    # than queries x rows for a few queries per list (n = 1e6, 1 thread)
                    zl = torch.mm(w, hq.T)
                    if self.has_bias:
                        zl += self.bias.index_select(0, members).float().unsqueeze(1)
                    zl = zl.T
                z[:, : b - a].index_copy_(0, by_list[lo : lo + cnt], zl)
            lo += cnt
        z = z.view(N, p * L)
        if copy is not None and bool(torch.isfinite(h).all()):
            # rows of the copy are finite (non-finite rows are left out at build); only an
            # overflow could give NaN, and top_k_ids drops non-finite scores from the top
            return z
        return z.masked_fill_(torch.isnan(z), float("-inf"))

    def _ids_at(self, lists: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Class ids of slots pos (N, m) int64 of _list_scores' rows; -1 for pos -1 and for
        slots past the end of their list."""
        L = self.max_list
        lst = torch.gather(lists, 1, torch.div(pos.clamp_min(0), L, rounding_mode="floor"))
        at = self.offsets[lst] + pos.clamp_min(0) % L
        ok = (pos >= 0) & (at < self.offsets[lst + 1])
        return torch.where(ok, self.order[torch.where(ok, at, 0)], -1)

    def _top_of_lists(self, hidden: torch.Tensor, lists: torch.Tensor, k: int) -> torch.Tensor:
        """(N, k) int64: the k best members of the probed lists, best first, -1 where short."""
        pos = top_k_ids(self._list_scores(hidden, lists), None, k)[1]
        return self._ids_at(lists, pos)

    def _score_lists(
        self, hidden: torch.Tensor, lists: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(_list_scores, the ids of all its slots (N, p x L) int64, -1 in empty slots)."""
        z = self._list_scores(hidden, lists)
        slots = torch.arange(z.shape[1], device=z.device).expand(z.shape[0], -1)
        return z, self._ids_at(lists, slots)

    def fraction_scored(self, hidden: torch.Tensor) -> float:
        """Mean share of the n classes in each query's union (what the rerank scores)."""
        lists = self.probe_lists(hidden)
        sizes = (self.offsets[lists + 1] - self.offsets[lists]).sum(dim=1)
        return float(sizes.float().mean()) / max(1, self.n)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take a checkpoint's centroids and list assignment: the next build on the same
        weights gives the saved lists (warm refreshes make them depend on history, not only
        on the weights and the seed)."""
        if state.get("centroids") is not None:
            self._restore = (state["centroids"], state["assign"])

    def state_dict(self) -> dict[str, Any]:
        built = self.built and self.order.numel() > 0
        return dict(
            centroids=self.centroids.cpu() if built else None,
            assign=self.assign.cpu() if built else None,
            kind="clusters",
            dim=self.dim,
            num_lists=self.num_lists,
            nprobe=self.nprobe,
            mode=self.mode,
            center=self.center,
            iters=self.iters,
            refresh_iters=self.refresh_iters,
            balance=self.balance,
            seed=self.seed,
            live_rerank=self.live_rerank_option,
        )
