"""The search benchmark's arithmetic: best-so-far curves, time and epochs to a target, and the
per-seed comparison against random search (on hand-made histories, no sweeps)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from benchmarks.search_curves import (
    BASELINE,
    DEFAULT,
    best_at,
    best_so_far,
    epochs_to,
    per_seed,
    summary,
    time_to,
)
from benchmarks.search_efficiency import (
    CANDIDATE,
    CANDIDATES,
    Size,
    forget,
    load_log,
    logged_methods,
    request_for,
    run_name,
    sizes,
    startup_share,
)
from benchmarks.search_replay import replay, rung_table
from benchmarks.search_report import command
from raysweep.sweep import strategy


def history(points):
    return pd.DataFrame(points, columns=["t", "val"])


def run(method, seed, points, test=1.0):
    h = history(points)
    return {"space": "s", "method": method, "seed": seed, "history": h,
            "span_s": float(h["t"].max()), "epochs_run": len(h),
            "final_best": float(h["val"].min()), "test_de00": test}


def test_curve_reads():
    h = history([(3, 5.0), (1, 4.0), (2, 6.0), (4, 3.0)])
    t, best = best_so_far(h)
    assert list(t) == [1, 2, 3, 4] and list(best) == [4.0, 4.0, 4.0, 3.0]
    assert best_at((t, best), 0.5) == math.inf and best_at((t, best), 3.5) == 4.0
    assert time_to((t, best), 3.0) == 4 and time_to((t, best), 2.0) == math.inf
    assert epochs_to(h, 4.0) == 1 and epochs_to(h, 1.0) == math.inf


def test_per_seed_measures_against_that_seeds_random_run():
    runs = pd.DataFrame([
        run(BASELINE, 0, [(10, 3.0), (20, 2.5), (40, 2.0)], test=1.5),
        run(DEFAULT, 0, [(5, 2.8), (10, 1.9), (15, 1.8)], test=1.2),
        run(BASELINE, 1, [(10, 3.0), (30, 2.2)]),
        run(DEFAULT, 1, [(10, 2.5), (20, 2.4)]),  # never reaches 2.2
    ])
    seeds = per_seed(runs, BASELINE, DEFAULT).set_index(["seed", "method"])
    d0 = seeds.loc[(0, DEFAULT)]
    assert d0.target == 2.0 and d0.t_to_target_s == 10 and d0.t_to_target_frac == 10 / 40
    assert d0.epochs_to_target_frac == pytest.approx(2 / 3)
    assert d0.baseline_best_at_end == 3.0  # random's best when the default ended, at 15 s
    assert seeds.loc[(1, DEFAULT)].t_to_target_s == math.inf
    table = summary(per_seed(runs, BASELINE, DEFAULT)).set_index("method")
    assert table.loc[DEFAULT, "reached"] == 1 and table.loc[DEFAULT, "seeds"] == 2
    assert table.loc[BASELINE, "t_to_target_frac"] == 1.0


def test_a_space_measured_again_replaces_only_its_own_runs(tmp_path):
    """`BENCH_SPACES=quickstart` then `BENCH_SPACES=tabular` build one section: measuring a
    space drops its earlier runs from the log and keeps the other space's; measuring some
    seeds (a run in parts) drops only those."""
    log = tmp_path / "runs.jsonl"
    rows = [{"space": s, "method": BASELINE, "seed": k, "history": {"t": [1.0], "val": [2.0]}}
            for s in ("tabular", "quickstart") for k in (0, 1, 2)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    forget(log, ["quickstart"], range(0, 5))
    kept = load_log(log)
    assert list(kept["space"]) == ["tabular"] * 3 and list(kept["seed"]) == [0, 1, 2]
    forget(log, ["tabular"], range(1, 2))
    assert list(load_log(log)["seed"]) == [0, 2]
    forget(tmp_path / "none.jsonl", ["tabular"], range(5))  # nothing measured: nothing to drop


def test_measuring_some_methods_again_keeps_the_others(tmp_path):
    """BENCH_METHODS measures a subset: only those methods' runs of the seeds are dropped."""
    log = tmp_path / "runs.jsonl"
    rows = [{"space": "tabular", "method": m, "seed": k, "history": {"t": [1.0], "val": [2.0]}}
            for m in (BASELINE, DEFAULT, "TPE") for k in (0, 1)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    forget(log, ["tabular"], range(0, 1), [BASELINE, DEFAULT])
    kept = load_log(log)
    assert sorted(zip(kept["method"], kept["seed"], strict=True)) == sorted(
        [("TPE", 0), (BASELINE, 1), (DEFAULT, 1), ("TPE", 1)])
    assert logged_methods(kept) == [BASELINE, "TPE", DEFAULT]  # METHODS' order


def test_the_candidate_changes_only_what_it_says(monkeypatch):
    """The candidate's rungs are passed as a user passes them, its start-up share only while
    its own sweep runs; every other method leaves the space's settings alone."""
    size = Size(24, 16, 2)
    monkeypatch.setitem(CANDIDATES, "tabular", {"startup_share": 1 / 6})
    monkeypatch.setitem(CANDIDATES, "quickstart", {"grace_fraction": 1 / 3,
                                                   "reduction_factor": 2})
    quick = request_for("quickstart", CANDIDATE, 0, Size(16, 8, 2), None, "/tmp/x")
    assert (quick.grace_period, quick.reduction_factor) == (3, 2)
    tab = request_for("tabular", CANDIDATE, 0, size, None, "/tmp/x")
    assert (tab.grace_period, tab.reduction_factor) == (4, 3)  # the space's 1/4 and 3
    plain = request_for("tabular", DEFAULT, 0, size, None, "/tmp/x")
    assert (plain.grace_period, plain.reduction_factor) == (None, None)
    before = strategy.STARTUP_SHARE
    with startup_share("tabular", CANDIDATE):
        assert strategy.startup_trials(24) == 4
    with startup_share("tabular", DEFAULT), startup_share("quickstart", CANDIDATE):
        assert strategy.STARTUP_SHARE == before
    assert strategy.STARTUP_SHARE == before


def test_the_set_up_before_the_first_result_is_carried_per_seed():
    runs = pd.DataFrame([{**run(BASELINE, 0, [(10, 3.0), (40, 2.0)]), "first_result_s": 10.0},
                         {**run(DEFAULT, 0, [(12, 2.5), (20, 1.9)]), "first_result_s": 12.0}])
    table = summary(per_seed(runs, BASELINE, DEFAULT)).set_index("method")
    assert table.loc[BASELINE, "first_result_s"] == 10 and table.loc[DEFAULT,
                                                                     "first_result_s"] == 12
    # the default reaches random's 2.0 at 20 s: 8 s after its set-up, of random's 30
    assert table.loc[DEFAULT, "t_to_target_frac"] == pytest.approx(20 / 40)
    assert table.loc[DEFAULT, "after_setup_frac"] == pytest.approx(8 / 30)


def test_replayed_rungs_follow_ashas_rule_and_can_cut_a_late_bloomer():
    """Three trials one at a time, rungs at epochs 1 and 2 of 3 (grace 1, rf 2): trial 1 is
    worse than trial 0 at the first rung and stops there, although it would have ended best."""
    curves = [np.array([5.0, 4.0, 3.0]), np.array([6.0, 5.0, 1.0]), np.array([4.0, 3.0, 2.0])]
    (t, best), span = replay(curves, None, 1)
    assert span == 9 and time_to((t, best), 1.0) == 6  # the late bloomer's last epoch
    plan = strategy.rungs(3, 1 / 3, 2)
    assert plan.milestones == [1, 2]
    (t, best), span = replay(curves, plan, 1)
    assert span == 3 + 1 + 3 and best[-1] == 2.0 and time_to((t, best), 1.0) == math.inf
    # two at a time: trials 0 and 1 meet the first rung together, 0 arrives first and stays
    (t, best), span = replay(curves, plan, 2)
    assert span == 1 + 3 and time_to((t, best), 2.0) == 4


def test_replayed_brackets_hedge_the_first_rung():
    """Two brackets over 3 epochs, grace 1 and rf 2: bracket 0 compares at epochs 1 and 2,
    bracket 1 at epoch 2 only. The late bloomer (trial 1) is cut at epoch 1 in bracket 0 and
    kept in bracket 1 (trial 0 is the first at epoch 2); Ray draws bracket 1 with odds
    e^-1 : 1 (one rung fewer), so over seeds it survives in about a quarter of the replays."""
    curves = [np.array([5.0, 4.0, 3.0]), np.array([6.0, 5.0, 1.0]), np.array([4.0, 3.0, 2.0])]
    plan = strategy.Rungs(1, 2, 3, brackets=2)
    assert [plan.bracket_milestones(k) for k in range(2)] == [[1, 2], [2]]
    kept = [time_to(replay(curves, plan, 1, seed)[0], 1.0) < math.inf for seed in range(60)]
    assert 0.1 < np.mean(kept) < 0.45
    runs = [replay(curves, plan, 1, 7)[0][1] for _ in range(2)]
    assert np.array_equal(*runs)  # seeded: the same draw each time


def test_the_rung_table_replays_each_seeds_random_sweep():
    def sweep(seed, curves):
        h = pd.DataFrame([(0.0, v, i, e + 1) for i, c in enumerate(curves) for e, v in
                          enumerate(c)], columns=["t", "val", "trial", "epoch"])
        return {"space": "s", "method": BASELINE, "seed": seed, "history": h}

    runs = pd.DataFrame([sweep(0, [[5, 4, 3], [6, 5, 1], [4, 3, 2]]),
                         sweep(1, [[5, 4, 1], [6, 5, 3], [7, 6, 5]])])
    table = rung_table(runs, BASELINE, [1 / 3, 1.0], [2], concurrency={"s": 1}).set_index(
        "grace fraction")
    assert table.loc[0.333, "kept random's winner"] == "1/2"  # seed 0's winner is cut
    assert table.loc[0.333, "median share of random's time"] == math.inf
    # no rung below the budget: every seed keeps its winner, at random's own time
    assert table.loc[1.0, "kept random's winner"] == "2/2"
    assert table.loc[1.0, "median share of random's time"] == pytest.approx((6 / 9 + 3 / 9) / 2)
    assert table.loc["-", "rungs"] == "none (random as it ran)"  # the row to compare with
    assert table.loc["-", "median share of random's time"] == pytest.approx(0.5)
    hedged = rung_table(runs, BASELINE, [1 / 3], [2], concurrency={"s": 1}, brackets=2)
    assert list(hedged["brackets"]) == ["-", 2]


def test_another_epoch_budget_keeps_its_own_result_files(monkeypatch):
    """BENCH_TABULAR_EPOCHS changes the tabular sweeps' budget (the rungs follow it) and the
    name the results go under, so a run at the space's own budget never overwrites the default."""
    monkeypatch.delenv("BENCH_QUICKSTART_EPOCHS", raising=False)
    monkeypatch.delenv("BENCH_TABULAR_EPOCHS", raising=False)
    default = sizes(quick=False)
    assert run_name() == "search_efficiency"
    monkeypatch.setenv("BENCH_TABULAR_EPOCHS", "100")
    changed = sizes(quick=False)
    assert changed["tabular"].epochs == 100 and changed["quickstart"] == default["quickstart"]
    assert changed["tabular"].trials == default["tabular"].trials
    assert run_name() == "search_efficiency_tabular100"


def test_another_trial_budget_keeps_its_own_result_files_and_command(monkeypatch):
    """BENCH_QUICKSTART_TRIALS gives every method of that space the same other trial budget;
    the results go under their own name, whose section's command sets it again."""
    for var in ("TABULAR_EPOCHS", "QUICKSTART_EPOCHS", "TABULAR_TRIALS", "QUICKSTART_TRIALS"):
        monkeypatch.delenv(f"BENCH_{var}", raising=False)
    default = sizes(quick=False)
    monkeypatch.setenv("BENCH_QUICKSTART_TRIALS", "48")
    monkeypatch.setenv("BENCH_QUICKSTART_EPOCHS", "20")
    changed = sizes(quick=False)
    assert changed["quickstart"].trials == 48 and changed["quickstart"].epochs == 20
    assert changed["tabular"] == default["tabular"]
    assert run_name() == "search_efficiency_quickstart20_quickstartx48"
    assert command(run_name(), quick=False) == (
        "BENCH_QUICKSTART_EPOCHS=20 BENCH_QUICKSTART_TRIALS=48 "
        "python -m benchmarks.search_efficiency")
    assert command("search_efficiency", quick=True) == "python -m benchmarks.search_efficiency --quick"
