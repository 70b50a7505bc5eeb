"""Rung plans replayed on kept sweeps in many trial orders: is a plan's edge more than one order?

`benchmarks/search_replay.py` replays ASHA on each seed's random sweep in the order it ran. Here
the same replay runs over many orders of the same trials: random's trials are exchangeable, so
any order is a sweep that could have run; a TPE sweep's trials after its start-up are permuted
among themselves (its start-up stays first). Target and unit: each seed's random sweep without
stopping (its final best; its span in epochs at the same concurrency). Pure replay: no training.

    python -m benchmarks.search_replay_orders [RUNS.jsonl] [ORDERS]
        # default: results/search_efficiency_s23.runs.jsonl, 60 orders per seed;
        # writes results/search_replay_orders.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import RESULTS, md_table
from benchmarks.search_curves import time_to
from benchmarks.search_efficiency import load_log
from benchmarks.search_replay import replay, trial_curves
from raysweep.sweep import strategy

PLANS = [(1 / 8, 3), (3 / 16, 2), (3 / 16, 4), (1 / 4, 2), (1 / 4, 3), (5 / 16, 2), (5 / 16, 3),
         (3 / 8, 2), (1 / 2, 2)]
# the trials each source keeps in place: TPE's start-up ran at random before it learnt
SOURCES = {"random": 0, "TPE": 6}


def shares(runs: pd.DataFrame, space: str, source: str, orders: int) -> dict:
    """plan -> each (seed, order)'s share of random's epochs until random's final best."""
    rng, keep, out = np.random.default_rng(0), SOURCES[source], {}
    sub = runs[runs["space"] == space]
    for seed in sorted(sub["seed"].unique()):
        base = sub[(sub.seed == seed) & (sub.method == "random")].iloc[0]
        (_, best), span = replay(trial_curves(base.history), None, 2)
        curves = trial_curves(sub[(sub.seed == seed) & (sub.method == source)].iloc[0].history)
        top = max(len(c) for c in curves)
        for _ in range(orders):
            order = list(range(keep)) + list(keep + rng.permutation(len(curves) - keep))
            trials = [curves[i] for i in order]
            for plan in [None, *PLANS]:
                rungs = strategy.rungs(top, *plan) if plan else None
                got, _ = replay(trials, rungs, 2)
                out.setdefault(plan, []).append(time_to(got, float(best[-1])) / span)
    return out


def table(runs: pd.DataFrame, space: str, orders: int) -> pd.DataFrame:
    rows = []
    for source in SOURCES:
        for plan, got in shares(runs, space, source, orders).items():
            got = np.array(got)
            top = 16 if space == "tabular" else 8
            rows.append({"curves": source, "grace fraction": f"{plan[0]:.3g}" if plan else "-",
                         "reduction factor": plan[1] if plan else "-",
                         "rungs": str(strategy.rungs(top, *plan).milestones) if plan
                         else "none",
                         "median share of random's epochs": round(float(np.median(got)), 3),
                         "orders reaching random's best": f"{np.isfinite(got).mean():.0%}"})
    return pd.DataFrame(rows)


def main(argv: list[str]) -> None:
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return
    log = Path(argv[0]) if argv else RESULTS / "search_efficiency_s23.runs.jsonl"
    log = log if log.exists() else RESULTS / log.name
    orders = int(argv[1]) if len(argv) > 1 else 60
    runs = load_log(log)
    md = ["## Rung plans replayed in many trial orders", "",
          f"Runs: `{log.name}`; {orders} orders per seed; tabular at 16 epochs, 2 at a time.",
          "", md_table(table(runs, "tabular", orders)), "",
          f"Command: `python -m benchmarks.search_replay_orders {log.name} {orders}`"]
    (RESULTS / "search_replay_orders.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main(sys.argv[1:])
