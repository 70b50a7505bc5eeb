"""The new-session bound's group-conditional quantiles (raysweep.serve.mondrian): sessions weigh
the same, a small cell takes the pooled quantile, and a known group that no cell sees is lifted
to its floor."""

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


def test_cells_get_their_own_quantile_and_a_small_cell_the_pooled_one():
    g = _groups()
    scores = np.where(g["cell"] == "brown", 10.0, 1.0) * np.random.default_rng(1).uniform(
        0.5, 1.5, len(g["cell"]))
    g["cell"][:15] = "tiny"  # 15 photos of one session: too few for a quantile of its own
    table, pooled, _ = mondrian.fit(scores, g, 0.9, 0.0)
    assert set(table) == {"light", "brown"}
    assert table["brown"] > 5 * table["light"]
    assert mondrian.multipliers(np.array(["tiny", "light"]), table, pooled)[0] == pooled


def test_a_known_group_the_cells_miss_is_lifted_to_the_floor():
    g = _groups()
    rng = np.random.default_rng(2)
    # dark photos err three times more, whatever their cell: the cells' quantiles miss them
    scores = rng.uniform(0.5, 1.5, len(g["cell"])) * np.where(g["tone"] == "dark", 3.0, 1.0)
    dark = g["tone"] == "dark"
    table, pooled, lift = mondrian.fit(scores, g, 0.9, 0.0)
    bound = lift * mondrian.multipliers(g["cell"], table, pooled)
    assert lift == 1.0 and np.mean(scores[dark] <= bound[dark]) < 0.6
    table, pooled, lift = mondrian.fit(scores, g, 0.9, 0.82)
    bound = lift * mondrian.multipliers(g["cell"], table, pooled)
    assert lift > 1.2
    _, inv, counts = np.unique(g["session"][dark], return_inverse=True, return_counts=True)
    w = 1.0 / counts[inv]  # every session weighs the same within the group
    assert np.sum(w * (scores[dark] <= bound[dark])) / w.sum() >= 0.82
    assert np.mean(scores <= bound) >= 0.9


def test_the_lift_judged_out_of_fold_is_at_least_the_in_sample_one():
    g = _groups()
    rng = np.random.default_rng(3)
    scores = rng.uniform(0.5, 1.5, len(g["cell"])) * np.where(g["tone"] == "dark", 3.0, 1.0)
    _, _, inside = mondrian.fit(scores, g, 0.9, 0.8)
    g["fold"] = np.array([s[-1] for s in g["session"]]).astype(int) % 3  # sessions, 3 folds
    table, pooled, outside = mondrian.fit(scores, g, 0.9, 0.8)
    assert outside >= inside > 1.0
    # the cell quantiles themselves use every fold
    assert table == mondrian.fit(scores, {k: v for k, v in g.items() if k != "fold"}, 0.9, 0.8)[0]
