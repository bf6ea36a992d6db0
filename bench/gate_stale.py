"""Does the index kept from a build that missed search_min_mass predict the next build's mass?

    python3 -m bench.gate_stale --task wordnet-lemma --time-limit 150 [bench.accuracy options]

While the search gate is shut (search_min_mass not yet met), every scheduled refresh whose
exact ceiling passes the floor builds an index only to measure it; at n ~ 1.5e5 a FAISS IVF-PQ
build costs about 3 s on one CPU core, some 20 gated steps. This runs bench.accuracy's
training (the search kept off: the floor is set out of reach) and at every refresh measures,
on the same probe rows, (a) the exact ceiling, (b) the captured mass of the index kept from the
previous build, stale by one refresh interval, and (c) the mass of the fresh build. The
record gives the pairs, so the rule "rebuild only when the kept index captures at least a
share of the floor" is read from data (quality.STALE_SHARE).
One JSON record to bench/results/gate_stale-<task>-<time>.json.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys

import torch

from bench import accuracy
from triton_softmax import quality
from triton_softmax.index.quality import captured_mass, lse_without_target, search_probe_rows


def main(argv: list[str] | None = None) -> dict:
    argv = list(argv if argv is not None else sys.argv[1:])
    out = "bench/results"
    if "--record-dir" in argv:
        i = argv.index("--record-dir")
        out = argv[i + 1]
        del argv[i : i + 2]
    rows: list[dict] = []
    before, after = quality.QualityMonitor.before_build, quality.QualityMonitor.on_refresh

    @torch.no_grad()
    def probe_before(self, module) -> bool:
        m = module.manager
        probe = self._probe_rows(module)
        if probe is None or m.index is None or not m.index.built:
            rows.append(dict(step=m.steps, stale=None))
            return True
        h, y, k = probe
        lse, ceiling = lse_without_target(h, module.weight, module.bias, y, top=k)
        ids = search_probe_rows(m.index, h, k)  # as before_build searches the kept index
        stale = float(captured_mass(ids, h, module.weight, module.bias, y, lse).mean())
        rows.append(dict(step=m.steps, ceiling=float(ceiling.mean()), stale=stale))
        return True  # always build: the fresh mass is measured by on_refresh

    def measure_after(self, module) -> None:
        after(self, module)
        if rows and "fresh" not in rows[-1]:
            rows[-1].update(fresh=self.last.get("mass"), ceiling=self.last.get("ceiling"))

    quality.QualityMonitor.before_build = probe_before
    quality.QualityMonitor.on_refresh = measure_after
    try:
        recs = accuracy.main(
            argv + ["--search-min-mass", "1.0", "--out", "/tmp/gate_stale", "--no-progress"]
        )
    finally:
        quality.QualityMonitor.before_build, quality.QualityMonitor.on_refresh = before, after
    rec = dict(
        kind="gate_stale",
        argv=argv,
        machine=platform.processor() or platform.machine(),
        started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        versions=dict(torch=torch.__version__),
        label=recs[0]["label"] if recs else None,
        refreshes=rows,
    )
    os.makedirs(out, exist_ok=True)
    task = argv[argv.index("--task") + 1] if "--task" in argv else "task"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M")
    path = os.path.join(out, f"gate_stale-{task}-{stamp}.json")
    with open(path, "w") as fh:
        json.dump(rec, fh, indent=1)
        fh.write("\n")
    for r in rows:
        print(r)
    print(path)
    return rec


if __name__ == "__main__":
    main()
