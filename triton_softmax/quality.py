"""Quality as the knob: target_mass and method="auto"'s quality rule.

The module keeps references to the first PROBE_ROWS rows of its last training batch (a view:
no copy, no host sync per step). With a target (IndexOptions.target_mass, or under
method="auto" dispatch.AUTO_TARGET_SHARE of the exact top-(|S| - 1) mass), every index
refresh ends with `on_refresh`: one exact pass over the probe rows, then the captured
softmax mass of the |S| - 1 ids the forward retrieves, with the clusters (or FAISS IVF)
nprobe set to the smallest rung of the doubling ladder that meets the target
(index/quality.tune_probes; the widest when none does).

Under method="auto", `step` runs `select` at the first training step and every refresh_every
steps after: the sampled paths the crossover table ranks faster than the exact one are
refreshed and measured in turn, fastest first, until one meets the target
(dispatch.choose_by_quality); if none does, the exact path runs (mass 1). The choice, the
masses and the probe's cost are in stats() and explain(), and checkpoints carry them.

search_min_mass (lsh / faiss): the forward runs no search (`searching`: S = {target}, the
uniform T alone estimates the non-target mass, at the cost of a shared-negative step) until a
refresh measures that much captured mass; from then on it searches (an untrained model's
softmax is flat: no |S| classes hold much of it, whatever finds them).
"""

from __future__ import annotations

import itertools
import time

import torch

from . import dispatch
from .dispatch import Choice, choose_by_quality
from .index.quality import captured_mass, lse_without_target, search_probe_rows, tune_probes
from .options import IndexOptions

PROBE_ROWS = 64  # rows of the last training batch the probe measures on
# search_min_mass: a scheduled build is skipped while the index kept from the last build (which
# missed the floor) captures less than this share of the floor on the new probe rows and the
# exact ceiling has not risen since that build
STALE_SHARE = 0.5
MAX_KEPT_RUNS = 3  # refreshes in a row that may skip a build on the kept index's measurement
# search_min_mass: no build is measured while the exact top-(|S| - 1) holds less than the floor
# / CEILING_SHARE (the FAISS and clusters indexes captured at most 0.69 of that ceiling while
# the gate was shut on WordNet, bench.gate_stale: a build below it only to miss the floor)
CEILING_SHARE = 0.75


def ceiling_to_build(floor: float) -> float:
    """The mass the exact top-(|S| - 1) must hold on the probe rows before a refresh builds an
    index to measure against search_min_mass `floor`: floor / CEILING_SHARE, at most halfway
    from the floor to 1 (a floor above CEILING_SHARE stays reachable)."""
    return min(floor / CEILING_SHARE, (1.0 + floor) / 2)


def target_of(options: IndexOptions) -> float | None:
    """The mass to hold: target_mass, else AUTO_TARGET_SHARE under method="auto" (a share of
    the ceiling, see relative_target), else None."""
    if options.target_mass is not None:
        return options.target_mass
    return dispatch.AUTO_TARGET_SHARE if options.method == "auto" else None


def relative_target(options: IndexOptions) -> bool:
    """auto's default target is a share of the mass the exact top-(|S| - 1) holds on the probe
    rows, not an absolute mass: an untrained model's flat softmax puts little mass in any |S|
    classes (and the uniform T estimates it well there), so an absolute default would send
    every new model to the exact path. A target_mass the user gives is absolute."""
    return options.target_mass is None and options.method == "auto"


class QualityMonitor:
    """Measures the captured mass at refreshes; under method="auto" chooses the path.

    enabled=False (a sharded module): nothing is measured and auto stays speed-only."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.probe: tuple[torch.Tensor, torch.Tensor] | None = None  # (hidden, target) views
        self.choice: Choice | None = None  # auto: the path chosen by quality
        self.steps_at_select = -1
        self.last: dict = {}  # the last measurement (method, mass, nprobe, met, ladder, rows)
        self.measured: dict[str, dict] = {}  # auto: the paths the last select measured
        # search_min_mass: a refresh has measured the floor (one-way; under method="auto" it
        # outlives the select that measures every path anew, for any path it chooses then)
        self.search_open = False
        self.last_seconds = float("nan")
        self.total_seconds = 0.0
        self.select_seconds = float("nan")
        self._restore: dict[str, int | None] | None = None  # a checkpoint's nprobe per path

    # ---- the probe batch and the refresh hook ------------------------------------------------
    def remember(self, hidden: torch.Tensor, target: torch.Tensor) -> None:
        """Keep the first PROBE_ROWS rows of this training batch (views, detached)."""
        self.probe = (hidden[:PROBE_ROWS].detach(), target[:PROBE_ROWS])

    @torch.no_grad()
    def on_refresh(self, module) -> None:
        """After each refresh of module.manager: measure (and tune) the captured mass."""
        m = module.manager
        target = target_of(m.options)
        floor = m.options.search_min_mass
        if not self.enabled or (target is None and floor is None) or m.index is None:
            return
        restore, self._restore = self._restore, None
        if restore is not None and m.method in restore:  # resumed: the saved width
            if restore[m.method] is not None and hasattr(m.index, "set_nprobe"):
                m.index.set_nprobe(restore[m.method])
            return
        t0 = time.perf_counter()
        probe = self._probe_rows(module)
        if probe is None:  # no training batch (with a target) yet: the next refresh measures
            return
        h, y, k = probe
        r = tune_probes(
            m.index, h, module.weight, module.bias, y, k, target, relative_target(m.options)
        )
        r.update(method=m.method, target=target)
        r.update(built_ceiling=r["ceiling"], kept_runs=0)  # before_build's kept-index rule
        if floor is not None:  # on from the first refresh that measures the floor, then on:
            # hard negatives push down the classes they find, so the mass they capture falls
            # once they train (measured on WordNet: a two-way switch flickered around m)
            self.search_open = self.search_open or bool(r["mass"] >= floor)
            r.update(search=self.search_open, search_min_mass=floor)
        self.last = self.measured[m.method] = r
        self.last_seconds = time.perf_counter() - t0
        self.total_seconds += self.last_seconds

    @torch.no_grad()
    def before_build(self, module) -> bool:
        """Before a scheduled build under search_min_mass, while the search is off: one exact
        pass over the probe rows; when the exact top-(|S| - 1) classes hold less than
        ceiling_to_build(floor), an index (which captures a share of that) would miss the
        floor, so the build is deferred (False) and recorded as a measurement with the search
        off. Past that, when an index was built before (and missed the floor), it searches
        the probe rows first: a build is deferred too while that kept index captures less
        than STALE_SHARE x the floor and the ceiling has not risen since that build, at most
        MAX_KEPT_RUNS refreshes in a row (bench.gate_stale measured how a kept index's mass
        predicts the next build's). At n = 1e5 a FAISS build costs seconds where a step with
        the search off costs a tenth of one."""
        m = module.manager
        floor = m.options.search_min_mass
        if not self.enabled or floor is None or self.probe is None:
            return True
        if self.search_open:  # the switch is one-way
            return True
        t0 = time.perf_counter()
        probe = self._probe_rows(module)
        if probe is None or probe[2] == 0:
            return True
        h, y, k = probe
        lse, ceiling = lse_without_target(h, module.weight, module.bias, y, top=k)
        ceiling, kept = float(ceiling.mean()), None
        last = self.measured.get(m.method, {})
        if ceiling >= ceiling_to_build(floor):
            built = m.index is not None and m.index.built and "built_ceiling" in last
            if not built or ceiling > last["built_ceiling"] or last["kept_runs"] >= MAX_KEPT_RUNS:
                return True
            # the index kept from a build that missed the floor: a fresh build measured about
            # twice its mass (bench.gate_stale), so below STALE_SHARE x the floor, with the
            # ceiling no higher than at that build, a new build would miss it too
            ids = search_probe_rows(m.index, h, k)
            kept = float(captured_mass(ids, h, module.weight, module.bias, y, lse).mean())
            if kept >= STALE_SHARE * floor:
                return True
        self.last = self.measured[m.method] = dict(
            method=m.method, mass=float("nan"), ceiling=ceiling, goal=None, nprobe=None,
            met=None, ladder={}, rows=int(h.shape[0]), k=k, target=target_of(m.options),
            search=False, search_min_mass=floor, deferred=True, kept_mass=kept,
        )  # fmt: skip
        if "built_ceiling" in last:  # the kept index's build, for the next refresh's rule
            runs = last["kept_runs"] + (kept is not None)
            self.last.update(built_ceiling=last["built_ceiling"], kept_runs=runs)
        self.last_seconds = time.perf_counter() - t0
        self.total_seconds += self.last_seconds
        return False

    def _probe_rows(self, module) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """(hidden, target, k): the probe rows that carry a target (ignored rows do not) and
        k = |S| - 1, the ids the forward retrieves; None before a training batch."""
        if self.probe is None:
            return None
        h, y = self.probe
        keep = (y >= 0) & (y < module.weight.shape[0])
        if not bool(keep.any()):
            return None
        return h[keep], y[keep], module.sampling_options.num_candidates - 1

    def searching(self, method: str) -> bool:
        """False when search_min_mass is set and no refresh of `method`'s index has measured
        that much captured mass yet (the forward then takes S = {target}); True otherwise,
        also before the first measurement."""
        return self.search_open or bool(self.measured.get(method, {}).get("search", True))

    # ---- method="auto" -----------------------------------------------------------------------
    def step(self, module, hidden: torch.Tensor, target: torch.Tensor) -> None:
        """A training step: remember the probe rows; under auto, select the path when due."""
        self.remember(hidden, target)
        m = module.manager
        if not self.enabled or m.options.method != "auto":
            return
        speed = module.speed_choice(hidden.shape[0], hidden.dtype, hidden.device)
        if not speed.ranked:  # the exact path, or no table: nothing to choose between
            return
        due = (
            self.choice is None
            or self.choice.ranked != speed.ranked
            or m.steps - self.steps_at_select >= m.options.refresh_every
        )
        if due:
            self.select(module, speed)

    @torch.no_grad()
    def select(self, module, speed: Choice) -> Choice:
        """Refresh and measure speed.ranked's sampled paths, fastest first, until one meets
        the target; keep the first that does (full if none), dispatch.choose_by_quality.

        While search_min_mass holds the search off, every sampled path runs the same step (S =
        {target}, T alone), so the fastest one's scheduled build goes first, through the
        before_build rules: where they defer it, that path runs and nothing is built."""
        t0 = time.perf_counter()
        m, target = module.manager, target_of(module.manager.options)
        sampled = list(itertools.takewhile(lambda p: p != "full", speed.ranked))  # faster
        done: dict[str, dict] = {}
        built = None
        self._restore = None  # a select measures anew, also the first after a checkpoint load
        if m.options.search_min_mass is not None and not self.search_open and sampled:
            # the path whose index was kept (before_build's kept-index rule), else the fastest
            path = m.method if m.method in sampled else sampled[0]
            deferred = m.builds_deferred
            m.refresh(module.weight, module.bias, path, scheduled=True)
            if m.builds_deferred > deferred:
                return self._selected(m, t0, self._gated(speed, path))
            built = path  # built (and measured): the others are measured as ever
            done = {path: self.measured[path]} if path in self.measured else {}
        self.measured = done  # every path measured anew
        for path in sampled:
            if path != built:
                m.refresh(module.weight, module.bias, path)  # on_refresh measures it
            if self.measured.get(path, {}).get("met"):
                break
        masses = {p: r["mass"] for p, r in self.measured.items()}
        # one probe batch and |S| for every path: one goal (target x ceiling when relative)
        goals = [r["goal"] for r in self.measured.values() if r.get("goal") is not None]
        choice = choose_by_quality(speed, masses, goals[-1] if goals else target)
        if choice.method == "full":  # no index on the exact path: free the last one tried
            m.index, m.method = None, None
        elif choice.method != m.method:  # none met, full does not fit: the best one
            m.refresh(module.weight, module.bias, choice.method)
        return self._selected(m, t0, choice)

    def _selected(self, m, t0: float, choice: Choice) -> Choice:
        # a scheduled refresh at this step, also the first after a checkpoint load (whose
        # schedule the manager would otherwise continue from the saved step)
        m.steps_at_refresh = m.steps
        self.choice, self.steps_at_select = choice, m.steps
        self.select_seconds = time.perf_counter() - t0
        return choice

    def _gated(self, speed: Choice, path: str) -> Choice:
        """auto's choice while the gate defers every build: `path`, the fastest sampled one."""
        reason = (
            f"{path} is the fastest sampled path; while the search is off (below) every sampled "
            f"path takes the same step, S = {{target}} and T alone, so none is built to be "
            f"measured [speed: {speed.reason}]"
        )
        return Choice(path, reason, speed.inputs, speed.ranked)

    def adjust(self, speed: Choice) -> Choice:
        """The path that runs: the quality choice when it was made for this speed ranking."""
        if self.choice is not None and speed.ranked and speed.ranked == self.choice.ranked:
            return self.choice
        return speed

    # ---- reporting and checkpoints -----------------------------------------------------------
    def stats(self, options: IndexOptions) -> dict:
        r = self.last
        return dict(
            target_mass=target_of(options) if self.enabled else None,
            target_relative=relative_target(options),
            mass_ceiling=r.get("ceiling", float("nan")),
            mass_goal=r.get("goal"),
            captured_mass=r.get("mass", float("nan")),
            captured_mass_index=r.get("method"),
            nprobe=r.get("nprobe"),
            target_met=r.get("met"),
            probe_rows=r.get("rows", 0),
            probe_seconds=self.last_seconds,
            probe_seconds_total=self.total_seconds,
            auto_choice=self.choice.method if self.choice is not None else None,
            auto_masses={p: x["mass"] for p, x in self.measured.items()} if self.choice else {},
            auto_select_seconds=self.select_seconds,
            search_min_mass=options.search_min_mass,
            search_on=r.get("search", True) if options.search_min_mass is not None else None,
        )

    def explain(self, options: IndexOptions, choice: Choice) -> str:
        """The explain() suffix: the last measurement; nothing where no target is in force
        (or auto runs the exact path by speed alone: nothing to measure)."""
        target = target_of(options)
        floor = options.search_min_mass
        r = self.last
        search = ""
        if self.enabled and floor is not None:
            if "search" not in r:
                search = f"; search_min_mass {floor}: the search runs until a refresh measures"
            elif r.get("deferred") and r.get("kept_mass") is not None:
                search = (
                    f"; search OFF and the index not rebuilt: the index kept from the last "
                    f"build captures {r['kept_mass']:.3f} < {STALE_SHARE} x search_min_mass "
                    f"{floor} (the exact top-{r['k']} holds {r['ceiling']:.3f}), so S = "
                    "{target} and T alone until a refresh measures that much"
                )
                return search
            elif r.get("deferred"):
                search = (
                    f"; search OFF and the index not built: the exact top-{r['k']} holds "
                    f"{r['ceiling']:.3f} of the non-target mass, under the "
                    f"{ceiling_to_build(floor):.3f} a build needs to reach search_min_mass "
                    f"{floor} (an index captures less than the exact top-k), so "
                    "S = {target} and T alone until a refresh measures that much"
                )
                return search
            elif r["mass"] >= floor:
                search = f"; search on (captured mass {r['mass']:.3f} >= search_min_mass {floor})"
            elif r["search"]:
                search = (
                    f"; search on since a refresh measured search_min_mass {floor} (captured "
                    f"mass now {r['mass']:.3f}: hard negatives push down what they find)"
                )
            else:
                search = (
                    f"; search OFF: captured mass {r['mass']:.3f} < search_min_mass {floor}, "
                    "so S = {target} and T alone until a refresh measures that much"
                )
        if not self.enabled or target is None or (not choice.ranked and not options.target_mass):
            return search
        if not r:
            return f"; target_mass {target}: not measured yet (measured at refreshes in training)"
        met = "met" if r["met"] else "NOT met at the widest setting"
        if relative_target(options) and r.get("goal") is not None:
            target = (
                f"{target} of the exact top-{r.get('k')} mass {r['ceiling']:.3f} "
                f"(= {r['goal']:.3f})"
            )
        width = ""
        if r["nprobe"] is not None:
            ladder = ", ".join(f"{p}: {x:.3f}" for p, x in r["ladder"].items())
            width = f" at nprobe={r['nprobe']} (ladder {ladder})"
        return search + (
            f"; captured mass {r['mass']:.3f} of the {r['method']} candidates on {r['rows']} "
            f"probe rows{width}, target {target} {met}; probe {self.last_seconds:.4f} s"
        )

    def state_dict(self) -> dict:
        c = self.choice
        return dict(
            choice=None if c is None else dict(c.__dict__, inputs=dict(c.inputs)),
            steps_at_select=self.steps_at_select,
            last=dict(self.last),
            measured={p: dict(r) for p, r in self.measured.items()},
            search_open=self.search_open,
        )

    def on_resume(self) -> None:
        """A checkpoint's index was put back as saved (its nprobe with it): the next refresh
        measures, as the uninterrupted run's does."""
        self._restore = None

    def load_state_dict(self, state: dict | None) -> None:
        """Restore the auto choice and the last measurement: the index rebuilt after the load
        gets the saved nprobe (not a new probe), and the next select comes when the schedule
        says (a select measures every path anew)."""
        state = state or {}
        c = state.get("choice")
        self.choice = None if c is None else Choice(**dict(c, ranked=tuple(c["ranked"])))
        self.steps_at_select = int(state.get("steps_at_select", -1))
        self.last = dict(state.get("last") or {})
        method = self.last.get("method")  # the index in use at the save and its width
        self._restore = {method: self.last.get("nprobe")} if method is not None else None
        self.measured = {p: dict(r) for p, r in (state.get("measured") or {}).items()}
        opened = any(r.get("search") for r in self.measured.values())  # older checkpoints
        self.search_open = bool(state.get("search_open", opened))
