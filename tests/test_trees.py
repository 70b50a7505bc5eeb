"""raysweep.serve.trees: sklearn gradient boosting as plain arrays, predicting as sklearn does."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from raysweep.errors import UserError
from raysweep.serve import trees


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Numeric columns with NaN, a categorical camera column (negative and non-integer codes,
    NaN) in the middle and a categorical last column, like the baselines' camera index."""
    rng = np.random.default_rng(seed)
    num = rng.normal(size=(n, 4))
    num[rng.random(num.shape) < 0.15] = np.nan
    cam = rng.integers(0, 6, n) * 1.5 - 3.0
    cam[rng.random(n) < 0.1] = np.nan
    last = rng.integers(0, 5, n).astype(np.float64)
    x = np.column_stack([num[:, :2], cam, num[:, 2:], last])
    y = np.nansum(num, axis=1) + np.nan_to_num(np.sin(cam)) + 0.3 * last + rng.normal(size=n) * 0.1
    return x, y


CATEGORICAL = np.array([False, False, True, False, False, True])


def _unseen(x: np.ndarray) -> np.ndarray:
    """Test rows with categories never seen in fit (negative, huge, between codes) and NaN."""
    x = x.copy()
    x[0:10, 2] = 99.0
    x[10:20, 2] = -7.0
    x[20:30, 2] = 1e9
    x[30:40, 2] = 0.25
    x[40:50, 5] = 11.0
    x[50:60, 5] = np.nan
    x[60:70, :] = np.nan
    return x


def _on_thresholds(model, x: np.ndarray) -> np.ndarray:
    """`x` plus rows whose numeric values sit exactly on split thresholds (`<=` goes left)."""
    a = trees.export(model)
    split = (a["node_is_leaf"] == 0) & (a["node_is_categorical"] == 0)
    t = np.unique(a["node_threshold"][split])
    rows = np.repeat(x[:1], len(t), axis=0)
    rows[:, ~CATEGORICAL] = t[:, None]
    return np.concatenate([x, rows])


def _fit(loss: str, depth: int | None, categorical=CATEGORICAL, seed: int = 0):
    x, y = _data(300, seed)
    return HistGradientBoostingRegressor(
        loss=loss, max_depth=depth, max_iter=25, learning_rate=0.3, categorical_features=categorical,
        early_stopping=False, random_state=seed,
    ).fit(x, y)


@pytest.mark.parametrize("loss", ["squared_error", "absolute_error"])
@pytest.mark.parametrize("depth", [1, 3, None])
def test_round_trip_predicts_as_sklearn(tmp_path, loss, depth):
    models = [_fit(loss, depth, seed=s) for s in range(3)]  # one per Lab channel
    path = tmp_path / "trees.npz"
    trees.save(path, models)
    loaded = trees.load(path)
    assert len(loaded) == 3
    for model, t in zip(models, loaded, strict=True):
        x = _on_thresholds(model, _unseen(_data(200, seed=7)[0]))
        assert t.n_features == 6 and t.loss == loss
        got, want = t.predict(x), model.predict(x)
        assert got.dtype == np.float64 and got.shape == (len(x),)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert [p.name for p in tmp_path.iterdir()] == ["trees.npz"]  # no temp file left behind


def test_without_categorical_features():
    model = _fit("squared_error", None, categorical=None)
    x = _unseen(_data(100, seed=3)[0])
    got = trees.Trees.from_arrays(trees.export(model)).predict(x)
    np.testing.assert_allclose(got, model.predict(x), rtol=0, atol=1e-12)


def test_file_is_plain_arrays(tmp_path):
    path = tmp_path / "t.npz"
    trees.save(path, [_fit("squared_error", 3)])
    with np.load(path, allow_pickle=False) as npz:
        kinds = {k: npz[k].dtype.kind for k in npz.files}
    assert set(kinds.values()) <= set("iuf"), kinds


def test_broken_or_foreign_file_is_user_error(tmp_path):
    good = tmp_path / "good.npz"
    trees.save(good, [_fit("squared_error", 3)])
    data = good.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.npz").write_text("not arrays\n")
    np.save(tmp_path / "array.npy", np.arange(3))
    np.savez(tmp_path / "foreign.npz", weights=np.ones(3))
    with np.load(good) as npz:
        arrays = dict(npz)
    arrays["model0.node_left"] = arrays["model0.node_left"] * 0 + 10**6  # a child that is not
    np.savez(tmp_path / "bad_index.npz", **arrays)
    arrays["model0.node_left"] = np.zeros(3, dtype=object)
    np.savez(tmp_path / "pickled.npz", **arrays)
    names = ["truncated.npz", "text.npz", "array.npy", "foreign.npz", "bad_index.npz",
             "pickled.npz", "missing.npz"]
    for name in names:
        with pytest.raises(UserError) as e:
            trees.load(tmp_path / name)
        assert name in str(e.value), name


def test_wrong_column_count_is_user_error():
    t = trees.Trees.from_arrays(trees.export(_fit("squared_error", 3)))
    for x in (np.zeros((4, 5)), np.zeros((4, 7)), np.zeros(6)):
        with pytest.raises(UserError, match="6 input columns"):
            t.predict(x)


def test_export_refuses_what_it_cannot_reproduce():
    with pytest.raises(UserError, match="poisson"):
        x, y = _data(100, 0)
        trees.export(HistGradientBoostingRegressor(loss="poisson", max_iter=3).fit(x, np.abs(y)))
    with pytest.raises(UserError, match="not fitted"):
        trees.export(HistGradientBoostingRegressor())
