"""The search benchmark's section: its tables, the plot and the targets, from the runs."""

from __future__ import annotations

import math
import re

import pandas as pd

from benchmarks import Section, describe_machine, load_note, machine, md_table, result_path
from benchmarks.search_curves import BASELINE, DEFAULT, per_seed, plot, summary
from benchmarks.search_replay import rung_table
from raysweep.sweep import strategy

# the rung plans replayed on random's curves: the spaces' 1/4 and 3 among earlier, later, wider
REPLAY_FRACTIONS, REPLAY_FACTORS = [1 / 10, 1 / 8, 1 / 6, 1 / 4, 1 / 3, 1 / 2], [2, 3, 4]
# and the spaces' defaults (1/4 with 3, 1/3 with 2) in the bracketed method's brackets
HEDGED = [1 / 4, 1 / 3], [2, 3]

TARGET_FRAC = 1 / 3


def targets(table: pd.DataFrame, seeds: pd.DataFrame, baseline: str, default: str) -> list[dict]:
    """The issue's three targets per space, each with its measured number, for the default and
    for a candidate measured beside it (the method whose name says so)."""
    out = []
    for method in [default] + [m for m in dict.fromkeys(table["method"]) if "candidate" in m]:
        out += [{"method": method, **row} for row in
                method_targets(table, seeds, baseline, method)]
    return out


def method_targets(table: pd.DataFrame, seeds: pd.DataFrame, baseline: str,
                   default: str) -> list[dict]:
    out = []
    for space in dict.fromkeys(table["space"]):
        d = table[(table.space == space) & (table.method == default)]
        b = table[(table.space == space) & (table.method == baseline)]
        if not (len(d) and len(b)):
            continue  # a run cut short: nothing to compare yet
        d, b = d.iloc[0], b.iloc[0]
        s = seeds[(seeds.space == space) & (seeds.method == default)]
        no_worse = int((s.final_best <= s.baseline_best_at_end).sum())
        out += [
            {"space": space, "target": "reaches random's final best in <= 1/3 of random's wall",
             "measured": f"median {d.t_to_target_frac:.2f} of random's span "
                         f"({d.reached}/{d.seeds} seeds reached it)",
             "met": bool(d.t_to_target_frac <= TARGET_FRAC)},
            {"space": space, "target": "the same, each sweep's set-up before its first result "
                                       "left out (context)",
             "measured": f"median {d.after_setup_frac:.2f} of random's span after its set-up "
                         f"(set-up median {d.first_result_s:.0f} s)",
             "met": bool(d.after_setup_frac <= TARGET_FRAC)},
            {"space": space, "target": "final best no worse than random's at equal wall time",
             "measured": f"median {d.final_best:.3f} vs random's {d.baseline_best_at_end:.3f} "
                         f"when this method ended ({no_worse}/{len(s)} seeds no worse)",
             "met": bool(d.final_best <= d.baseline_best_at_end)},
            {"space": space, "target": "champion's test dE00 no worse than random's champion's",
             "measured": f"median {d.test_de00:.3f} vs {b.test_de00:.3f}",
             "met": bool(d.test_de00 <= b.test_de00)}]
    return out


def shown(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "space": table.space, "method": table.method, "seeds": table.seeds,
        "span s": table.span_s, "first result s": table.first_result_s,
        "epochs run": table.epochs_run,
        "final best val": [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in
                           zip(table.final_best, table.final_best_min, table.final_best_max,
                               strict=True)],
        "reached random's best": [f"{r}/{n}" for r, n in zip(table.reached, table.seeds,
                                                             strict=True)],
        "s to random's best": table.t_to_target_s,
        "share of random's span": table.t_to_target_frac,
        "same, after the set-up": table.after_setup_frac,
        "share of random's epochs": table.epochs_to_target_frac,
        "random's best at this span": table.baseline_best_at_end,
        "champion test dE00": [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in
                               zip(table.test_de00, table.test_de00_min, table.test_de00_max,
                                   strict=True)]})


def command(name: str, quick: bool) -> str:
    """The command that writes the results called `name`: the budgets its name records
    (search_efficiency_tabular100: BENCH_TABULAR_EPOCHS=100; _quickstartx48:
    BENCH_QUICKSTART_TRIALS=48) in front of the benchmark."""
    if name == "gpu_search":
        return "python -m benchmarks.run --gpu"
    budgets = "".join(f"BENCH_{space.upper()}_{'TRIALS' if mark else 'EPOCHS'}={n} "
                      for space, mark, n in re.findall(r"_(tabular|quickstart)(x?)(\d+)", name))
    return budgets + "python -m benchmarks.search_efficiency" + (" --quick" if quick else "")


def section(runs: pd.DataFrame, quick: bool, sizes: dict, seconds: float, methods: list[str],
            name: str = "search_efficiency", brackets: int = 3,
            candidates: dict | None = None) -> Section:
    """`methods` in the plot's order; `brackets`: the bracketed method's; `candidates`: per
    space, what the candidate method changes (search_efficiency.CANDIDATES);
    `name`: the section's (its files are results/<name>[_quick].*)."""
    from raysweep.sweep import spaces

    # A seed cut short (the run was stopped) would compare some methods and not others.
    done = runs.groupby(["space", "seed"])["method"].transform("nunique") == len(methods)
    partial, runs = runs[~done], runs[done]
    seeds = per_seed(runs, BASELINE, DEFAULT)
    table = summary(seeds)
    goals = targets(table, seeds, BASELINE, DEFAULT)
    concurrency = {k: v.concurrent for k, v in sizes.items()}
    rungs_seen = pd.concat([rung_table(runs, BASELINE, REPLAY_FRACTIONS, REPLAY_FACTORS,
                                       concurrency),
                            rung_table(runs, BASELINE, *HEDGED, concurrency, brackets)
                            .query("brackets != '-'")])  # random as it ran: listed once
    png = result_path(name, quick, ".png")
    plot(runs, methods, png)
    setup = []
    for space in dict.fromkeys(runs["space"]):
        sz, sp = sizes[space], spaces.load_space(space)
        new = strategy.rungs(sz.epochs, sp.GRACE_FRACTION, sp.REDUCTION_FACTOR, brackets)
        below = [[m for m in new.bracket_milestones(k) if m < sz.epochs]
                 for k in range(brackets)]
        setup.append(f"- `{space}`: {sz.trials} trials per sweep, {sz.concurrent} at a time, "
                     f"`--set epochs={sz.epochs}` (the space's budget is {sp.MAX_EPOCHS}"
                     + (f"; also {', '.join(sz.sets)}" if sz.sets else "") + f"); default rungs "
                     f"{below[0]} (grace {sp.GRACE_FRACTION:.3g} of the budget, reduction "
                     f"factor {sp.REDUCTION_FACTOR}); {brackets} brackets: "
                     f"{', '.join(map(str, below))}; TPE start-up "
                     f"{strategy.startup_trials(sz.trials)} trials (multivariate, constant "
                     "liar)." + candidate_note(space, sz, sp, (candidates or {}).get(space),
                                               methods))
    cmd = command(name, quick)
    n_seeds = int(runs["seed"].nunique())
    md = [
        "## Search efficiency: TPE + ASHA against random search, over seeds",
        "",
        f"{len(runs)} sweeps ({n_seeds} seeds x {runs['method'].nunique()} methods x "
        f"{runs['space'].nunique()} spaces)" + (f" in {seconds / 60:.0f} min" if seconds == seconds
                                          else "") + ", seed-major (every method "
        "of a seed before the next seed, the order rotated per seed) so that other jobs' load "
        "falls on the methods alike; one Ray for all sweeps, each a `run_sweep` call with "
        "MLflow. Data: the synthetic default set (2,070 photos, split by tone): `tabular` "
        "searches its measured colours, ring and EXIF without the photos; `quickstart` its "
        "16 px crops.",
        "", *setup, "",
        *([f"Left out: {len(partial)} sweeps of seeds that did not run every method "
           f"({', '.join(sorted({f'{r.space} seed {r.seed}' for r in partial.itertuples()}))})."
           , ""] if len(partial) else []),
        "Per seed, the target is random search's final best validation dE00 and the unit of "
        "time is random's span (first trial start to last result); times are medians over "
        "seeds (inf: not reached in most seeds). `random's best at this span` is random's "
        "best validation at the moment this method's sweep ended (equal wall time). Test dE00 "
        "is each sweep's champion (best validation) on the held-out test split; brackets: "
        "[min, max] over seeds.",
        "", md_table(shown(table)), "",
        f"![best validation over wall time, median and 25-75% over seeds]({png.name})", "",
        "Targets (median over seeds, default = TPE + ASHA with the spaces' settings; a "
        "candidate measured beside it is held to the same targets):", "",
        md_table(pd.DataFrame(goals)), "",
        *replayed(rungs_seen, runs), "",
        f"Machine: {describe_machine()}; {load_note()}.", "",
        f"Command: `{cmd}`"]
    data = {"per_seed": seeds, "summary": table, "targets": goals, "machine": machine(),
            "rungs_replayed": rungs_seen,
            "sizes": {k: vars(v) for k, v in sizes.items()},
            "curves": {f"{r.space}/{r.method}/{r.seed}": r.history.to_dict("list")
                       for r in runs.itertuples()}}
    return Section(markdown="\n".join(md), data=data)


def candidate_note(space: str, sz, sp, change: dict | None, methods: list[str]) -> str:
    """What the candidate method ran with in `space`, when it ran."""
    if not change or not any("candidate" in m for m in methods):
        return ""
    frac = change.get("grace_fraction", sp.GRACE_FRACTION)
    rf = change.get("reduction_factor", sp.REDUCTION_FACTOR)
    plan = strategy.rungs(sz.epochs, frac, rf)
    share = change.get("startup_share", strategy.STARTUP_SHARE)
    startup = max(strategy.STARTUP_MIN, min(strategy.STARTUP_MAX,
                                            math.ceil(sz.trials * share)))
    return (f" The candidate: rungs {[m for m in plan.milestones if m < sz.epochs]} (grace "
            f"{frac:.3g}, reduction factor {rf}), TPE start-up {startup} trials (a {share:.3g} "
            "share of the budget).")


def replayed(table: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """The rung replay's paragraph and table (none for runs without per-trial curves)."""
    if not len(table):
        return []
    n = runs[runs["method"] == BASELINE].groupby("space")["seed"].nunique()
    return ["Rungs replayed on random's own curves (`benchmarks/search_replay.py`): each seed's "
            "random sweep without early stopping, its trials in the same order and as many at "
            "a time, one unit of time per epoch, stopped by Ray's ASHA rule at other rungs "
            "(the last rows: in 3 asynchronous-Hyperband brackets drawn as Ray draws them) "
            f"({', '.join(f'{k}: {v} seeds' for k, v in n.items())}). The share is of random's "
            "own time until the replay reaches random's final best (inf: not in most seeds; "
            "it fails when the rungs stop random's winner). No sampler is involved: this is "
            "what the rungs alone cost and save.", "", md_table(table)]
