"""ASHA replayed on random search's recorded learning curves: which rungs would have kept
random's winner, and how soon they would have reached its final best.

A random sweep without early stopping records every trial's whole curve, so any rung plan can be
replayed on it offline: the same trials in the same order, `concurrency` at a time, each epoch
one unit of time (load-free), and at each rung Ray's ASHA rule (a trial below the top 1/rf of
the results recorded at that rung so far stops; the first to arrive always continues). Only the
rungs change, never the configurations: this isolates what early stopping costs and saves,
which the sampler's choices blur in the measured sweeps. Pure functions: no Ray, no training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.search_curves import time_to
from raysweep.sweep import strategy


def replay(curves: list[np.ndarray], plan: strategy.Rungs | None, concurrency: int,
           seed: int = 0):
    """(t, best so far) and the span of `curves` (in start order) under `plan` (None: no
    stopping), with `concurrency` trials at a time and one unit of time per epoch. With
    `plan.brackets` > 1 each trial joins a bracket drawn as Ray draws it (favouring brackets
    with more rungs), seeded by `seed`; each bracket records its own rungs."""
    brackets = [[(m, {}) for m in plan.bracket_milestones(k) if m < plan.max_epochs][::-1]
                for k in range(plan.brackets)] if plan else [[]]
    sizes = np.array([len(plan.bracket_milestones(k)) for k in range(plan.brackets)]
                     if plan else [0])
    odds = np.exp(sizes - sizes.max())
    joins = np.random.default_rng(seed).choice(len(brackets), size=len(curves),
                                               p=odds / odds.sum())
    free = [0.0] * concurrency
    events: list[tuple[float, float]] = []
    for i, curve in enumerate(curves):
        rungs = brackets[joins[i]]
        slot = int(np.argmin(free))
        t = free[slot]
        for epoch, val in enumerate(curve, start=1):
            t += 1.0
            events.append((t, float(val)))
            if stops(rungs, i, epoch, float(val), plan):
                break
        free[slot] = t
    events.sort()
    ts = np.array([e[0] for e in events])
    return (ts, np.fmin.accumulate([e[1] for e in events])), float(ts.max())


def stops(rungs: list, trial: int, epoch: int, val: float, plan) -> bool:
    """Ray's ASHA at the first rung `epoch` has reached and `trial` has not been compared at:
    stop when below the (1 - 1/rf) quantile of the rung's recorded results (smaller is
    better here), then record."""
    for milestone, recorded in rungs:  # the highest rung first, as in Ray
        if epoch < milestone or trial in recorded:
            if epoch >= milestone:
                return False  # compared at this rung already
            continue
        cut = np.nanpercentile(list(recorded.values()), 100 / plan.reduction_factor) \
            if recorded else None
        recorded[trial] = val
        return cut is not None and val > cut
    return False


def rung_table(runs: pd.DataFrame, baseline: str, fractions: list[float], factors: list[int],
               concurrency: dict[str, int], brackets: int = 1) -> pd.DataFrame:
    """Per space and (grace fraction, reduction factor): over the seeds' random sweeps, the
    median share of random's own time until the replay reaches random's final best, and in how
    many seeds it does (it fails when the rungs stop random's winner). `concurrency`: each
    space's trials at a time; `brackets`: asynchronous Hyperband's (1: plain ASHA)."""
    rows = []
    for space, group in runs[runs["method"] == baseline].groupby("space", sort=False):
        if not all("trial" in pd.DataFrame(h) for h in group["history"]):
            continue  # runs recorded before the curves carried their trial
        seeds = [trial_curves(h) for h in group["history"]]
        top = max(len(c) for c in seeds[0])
        # first the sweep as it ran (no stopping): when random itself reached its final best
        for frac, rf in [(None, None)] + [(f, r) for f in fractions for r in factors]:
            plan = strategy.rungs(top, frac, rf, brackets) if frac else None
            shares = []
            for seed, curves in enumerate(seeds):
                base, span = replay(curves, None, concurrency[space])
                got, _ = replay(curves, plan, concurrency[space], seed)
                shares.append(time_to(got, float(base[1][-1])) / span)
            rows.append({"space": space, "grace fraction": round(frac, 3) if frac else "-",
                         "reduction factor": rf or "-", "brackets": brackets if plan else "-",
                         "rungs": str([m for m in plan.milestones if m < top]) if plan
                         else "none (random as it ran)",
                         "median share of random's time": float(np.median(shares)),
                         "kept random's winner": f"{int(np.isfinite(shares).sum())}/"
                                                 f"{len(shares)}"})
    return pd.DataFrame(rows)


def trial_curves(history: pd.DataFrame) -> list[np.ndarray]:
    """One sweep's per-trial validation curves, in the order the trials started."""
    h = pd.DataFrame(history).sort_values(["trial", "epoch"])
    return [g["val"].to_numpy(float) for _, g in h.groupby("trial", sort=True)]
