"""The new-session bound's group-conditional quantiles (raysweep.serve.mondrian): sessions weigh
the same, a small cell takes the pooled quantile, and a known group that no cell sees is lifted
to its floor, in the cells where it is missed."""

from __future__ import annotations

import numpy as np

from raysweep.serve import mondrian


def test_a_session_with_many_photos_weighs_as_one():
    # session a: 90 photos at 1; sessions b..j: one photo each, at 2..10
    scores = np.r_[np.ones(90), np.arange(2.0, 11.0)]
    sessions = np.r_[np.full(90, "a"), [f"s{i}" for i in range(9)]]
    assert np.quantile(scores, 0.5) == 1.0  # by photo, session a is the median
    assert mondrian.session_quantile(scores, sessions, 0.5) == 5.0  # by session: the 5th of 10
    assert mondrian.session_quantile(scores, sessions, 0.9) == 9.0


def _groups(n_per: int = 20, sessions: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    sid = np.repeat([f"s{i}" for i in range(sessions)], n_per)
    cell = rng.choice(["light", "brown"], len(sid))
    return {"cell": cell, "session": sid, "tone": np.where(rng.random(len(sid)) < 0.2, "dark",
                                                            "other"),
            "camera": np.repeat(["c0", "c1"], len(sid) // 2)}


def _covered(scores, bound, sessions, rows):
    """The session-weighted share of `rows` within the bound (each session weighs the same)."""
    _, inv, counts = np.unique(sessions[rows], return_inverse=True, return_counts=True)
    w = 1.0 / counts[inv]
    return float(np.sum(w * (scores[rows] <= bound[rows])) / w.sum())


def test_cells_get_their_own_quantile_and_a_small_cell_the_pooled_one():
    g = _groups()
    scores = np.where(g["cell"] == "brown", 10.0, 1.0) * np.random.default_rng(1).uniform(
        0.5, 1.5, len(g["cell"]))
    g["cell"][:15] = "tiny"  # 15 photos of one session: too few for a quantile of its own
    fitted = mondrian.fit(scores, g, 0.9, 0.0)
    assert set(fitted.table) == {"light", "brown"}
    assert fitted.table["brown"] > 5 * fitted.table["light"]
    assert set(fitted.lifts) == {"light", "brown", mondrian.POOLED}
    tiny = fitted.multipliers(np.array(["tiny"]))[0]
    assert tiny == fitted.pooled * fitted.lifts[mondrian.POOLED]
    # a group calibration never saw takes the pooled quantile and the widest lift
    assert fitted.multipliers(np.array(["unseen"]))[0] == fitted.pooled * max(
        fitted.lifts.values())


def test_a_known_group_the_cells_miss_is_lifted_to_the_floor():
    g = _groups()
    rng = np.random.default_rng(2)
    # dark photos err three times more, whatever their cell: the cells' quantiles miss them
    scores = rng.uniform(0.5, 1.5, len(g["cell"])) * np.where(g["tone"] == "dark", 3.0, 1.0)
    dark, every = g["tone"] == "dark", np.ones(len(scores), bool)
    bound = mondrian.fit(scores, g, 0.9, 0.0).multipliers(g["cell"])
    assert _covered(scores, bound, g["session"], dark) < 0.6
    fitted = mondrian.fit(scores, g, 0.9, 0.82)
    bound = fitted.multipliers(g["cell"])
    assert max(fitted.lifts.values()) > 1.2
    assert _covered(scores, bound, g["session"], dark) >= 0.82
    assert _covered(scores, bound, g["session"], every) >= 0.9


def test_the_lift_goes_to_the_cell_where_the_group_is_missed():
    g = _groups()
    rng = np.random.default_rng(4)
    g["tone"] = np.where((g["cell"] == "brown") & (rng.random(len(g["cell"])) < 0.4), "dark",
                         "other")  # dark photos are all predicted brown
    scores = rng.uniform(0.5, 1.5, len(g["cell"])) * np.where(g["tone"] == "dark", 3.0, 1.0)
    fitted = mondrian.fit(scores, g, 0.9, 0.82)
    assert fitted.lifts["brown"] > 1.2 and fitted.lifts["light"] < 1.05
    bound = fitted.multipliers(g["cell"])
    assert _covered(scores, bound, g["session"], g["tone"] == "dark") >= 0.82
    # one lift for every cell (the previous design) reaches the floor with a wider bound
    one = fitted.lifts["brown"] * mondrian.multipliers(g["cell"], fitted.table, fitted.pooled)
    assert np.mean(bound) < np.mean(one)


def test_cells_below_the_level_are_lifted_to_it_over_all_photos():
    g = _groups()
    scores = np.random.default_rng(5).uniform(0.5, 1.5, len(g["cell"]))
    fitted = mondrian.fit(scores, g, 0.9, 0.0, base=0.6)
    assert fitted.table["light"] < mondrian.fit(scores, g, 0.9, 0.0).table["light"]
    bound = fitted.multipliers(g["cell"])
    assert _covered(scores, bound, g["session"], np.ones(len(scores), bool)) >= 0.9
    assert min(fitted.lifts.values()) >= 1.0


def test_the_lift_judged_out_of_fold_is_at_least_the_in_sample_one():
    g = _groups()
    rng = np.random.default_rng(3)
    scores = rng.uniform(0.5, 1.5, len(g["cell"])) * np.where(g["tone"] == "dark", 3.0, 1.0)
    inside = mondrian.fit(scores, g, 0.9, 0.8)
    g["fold"] = np.array([s[-1] for s in g["session"]]).astype(int) % 3  # sessions, 3 folds
    outside = mondrian.fit(scores, g, 0.9, 0.8)
    assert max(outside.lifts.values()) >= max(inside.lifts.values()) > 1.0
    # the cell quantiles themselves use every fold
    assert outside.table == inside.table
