"""SampledSoftmaxLoss checkpoints (state_dict / load_state_dict).

The extra state holds the step count, seed, refresh schedule, the rows touched since the
last refresh (partial_refresh) and the index as the last refresh built it
(index.base.Snapshot: SimHash tables, k-means lists with their centroids and the copy of the
rows they score, the serialized FAISS index). A module loaded from it puts that index back
at its first use and refreshes at the steps the saved run would (0, R, 2R, ...), so for
every method, generator and candidate scheme the resumed run's losses equal the
uninterrupted run's bitwise, whether the checkpoint was taken before, at or between
refreshes (tests/test_resume.py). The cost: the checkpoint grows by the index (for FAISS
flat/IVF and the clusters' row copy, about n x d floats more). Loaded on another device type
(a CPU checkpoint onto CUDA), the index is rebuilt from the loaded weights instead (the
layouts differ), the schedule kept: equal from the next refresh on. A load that fails
changes nothing: a checkpoint whose index is of another kind or settings than this module
builds (method, lsh_generator, lsh bits/tables, FAISS kind, k-means lists), or whose
lsh_bits / lsh_tables differ from this module's, raises ValueError naming both before any
tensor is copied (make the module as the saved one was); a strict load with missing or
unexpected keys raises torch's RuntimeError, likewise before any copy. A module with no
index (method "full" or "uniform") ignores a checkpoint's index.

CheckpointState is the module's state-dict half, a mixin of SampledSoftmaxLoss (loss.py): it
expects self.manager (index.manager.IndexManager), self.quality, self.drift_monitor,
self.frequency (frequency.ClassFrequency: the target counts of sampler="frequency"),
self.sharding, self.weight, lsh_bits and lsh_tables.
"""

from __future__ import annotations


class CheckpointState:
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """torch's load_state_dict, except that a load that fails changes nothing: a strict
        load whose keys differ from this module's (a bias in one and not the other) raises
        torch's RuntimeError before any tensor or counter is copied; a checkpoint this
        module cannot take (another index kind, lsh bits/tables, shards) raises ValueError
        first; a size mismatch puts the counters back (kept_on_error)."""
        if strict:
            own = set(self.state_dict(keep_vars=True))
            missing, unexpected = sorted(own - set(state_dict)), sorted(set(state_dict) - own)
            if missing or unexpected:
                text = [f"Missing key(s) in state_dict: {missing}."] if missing else []
                text += [f"Unexpected key(s) in state_dict: {unexpected}."] if unexpected else []
                raise RuntimeError(
                    f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                    + "\n\t".join(text)
                )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        # args[-1]: torch's list of load errors (a size mismatch is reported there, and
        # raised only at the end: kept_on_error puts the counters back then)
        extra_key = prefix + "_extra_state"
        if extra_key in state_dict:  # before any tensor is copied
            self._check_extra_state(state_dict[extra_key])
        with self.manager.kept_on_error(args[-1]):
            super()._load_from_state_dict(state_dict, prefix, *args)

    def get_extra_state(self) -> dict:
        state = dict(self.manager.state_dict(), lsh_bits=self.lsh_bits, lsh_tables=self.lsh_tables)
        state["quality"] = self.quality.state_dict()
        state["drift"] = self.drift_monitor.state_dict()
        state["frequency"] = self.frequency.state_dict()
        if self.sharding is not None:
            state["bounds"] = self.sharding.bounds
        return state

    def _check_extra_state(self, state: dict) -> None:
        """ValueError when a checkpoint cannot load into this module as configured (shards,
        lsh bits and tables, the kind and settings of the index it holds)."""
        if self.sharding is not None:
            if [tuple(b) for b in state["bounds"]] != self.bounds:
                raise ValueError(
                    f"checkpoint has shards {state['bounds']}, module has {self.bounds}"
                )
        for name in ("lsh_bits", "lsh_tables"):
            if name in state and state[name] != getattr(self, name):
                raise ValueError(
                    f"checkpoint has {name}={state[name]!r}, this module {name}="
                    f"{getattr(self, name)!r}: make the module with the checkpoint's value"
                )
        self.manager.check_state(state, self.weight.device)

    def set_extra_state(self, state: dict) -> None:
        self._check_extra_state(state)
        self.manager.load_state_dict(state)  # its index is put back at the next use
        self.quality.load_state_dict(state.get("quality"))
        self.drift_monitor.load_state_dict(state.get("drift"), self.weight.device)
        self.frequency.load_state_dict(state.get("frequency"), self.weight.device)
