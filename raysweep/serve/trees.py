"""Fitted HistGradientBoostingRegressors as plain arrays on disk, and a numpy predictor for them.

A gradient-boosting champion must load the way every checkpoint does: without running code. A
pickle (or joblib) of a sklearn model runs code on load, so `export` turns a fitted regressor into
plain numeric arrays and `Trees` predicts from them with numpy alone; `save`/`load` put several
(one per Lab channel) in one .npz read with allow_pickle=False.

`Trees.predict` follows sklearn's own rules (sklearn 1.9: gradient_boosting.py `_raw_predict`,
`_predictor.pyx` `_predict_one_from_raw_data`) so that it equals `model.predict` exactly:

- Categorical columns first go through the model's OrdinalEncoder: a value is replaced by its
  index among the categories seen in fit; an unseen value or NaN becomes NaN. The encoded
  categorical columns are then placed before the numeric ones (the ColumnTransformer's order),
  and node feature indices refer to that order.
- At a split: NaN follows `missing_go_to_left`. A numeric value goes left when
  `value <= threshold`. A categorical value goes left when it is in the node's left bitset, right
  when it is a known category, and otherwise (negative, unknown) the missing value's way.
- The prediction is the baseline plus each tree's leaf value, added tree by tree in sklearn's
  order (so the float64 sums are bit-identical), through the loss's inverse link (identity for
  the two losses accepted).
"""

from __future__ import annotations

import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from raysweep.errors import UserError

FORMAT = 1
LOSSES = ("squared_error", "absolute_error")  # both have the identity link
_ROWS_PER_CHUNK_TIMES_TREES = 1 << 21  # bounds the (rows x trees) node-index array of a chunk

# name -> (dtype it is stored and used as, ndim); np.dtype kinds only, so allow_pickle=False loads
_SPEC: dict[str, tuple[type, int]] = {
    "format_version": (np.int64, 0),
    "sklearn_version": (np.uint8, 1),  # utf-8 bytes
    "loss": (np.uint8, 1),  # utf-8 bytes
    "n_features": (np.int64, 0),
    "baseline": (np.float64, 0),
    "cat_columns": (np.int64, 1),  # input columns that are categorical, in input order
    "cat_values": (np.float64, 1),  # their sorted known categories, concatenated
    "cat_offsets": (np.int64, 1),  # column i's categories: cat_values[off[i]:off[i + 1]]
    "tree_roots": (np.int64, 1),  # one per tree, in the order sklearn adds them
    "node_value": (np.float64, 1),
    "node_feature": (np.int64, 1),  # index after the categorical-first reordering
    "node_threshold": (np.float64, 1),
    "node_missing_left": (np.uint8, 1),
    "node_left": (np.int64, 1),  # global node indices
    "node_right": (np.int64, 1),
    "node_is_leaf": (np.uint8, 1),
    "node_is_categorical": (np.uint8, 1),
    "node_bitset": (np.int64, 1),  # row of left_bitsets (global)
    "left_bitsets": (np.uint32, 2),  # (n categorical splits, 8): categories going left
    "known_bitsets": (np.uint32, 2),  # (n categorical features, 8): categories known at fit
    "known_map": (np.int64, 1),  # feature index -> row of known_bitsets
}
_NODE_KEYS = [k for k in _SPEC if k.startswith("node_")]


def _text(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), dtype=np.uint8).copy()


def _untext(a: np.ndarray) -> str:
    return bytes(a.astype(np.uint8)).decode(errors="replace")


def export(model) -> dict[str, np.ndarray]:
    """A fitted HistGradientBoostingRegressor -> plain numeric arrays, enough to predict exactly
    as it does (`Trees.from_arrays(export(model)).predict(x) == model.predict(x)`)."""
    import sklearn  # lazy: only the exporting side (fit time) needs sklearn at all

    _check_exportable(model)
    cat_columns, cats = _categories_of(model)
    known_bitsets, known_map = model._bin_mapper.make_known_categories_bitsets()
    arrays = {
        "format_version": np.array(FORMAT),
        "sklearn_version": _text(sklearn.__version__),
        "loss": _text(model.loss),
        "n_features": np.array(int(model.n_features_in_)),
        "baseline": np.array(float(np.ravel(model._baseline_prediction)[0])),
        "cat_columns": cat_columns,
        "cat_values": np.concatenate(cats) if cats else np.zeros(0),
        "cat_offsets": np.cumsum([0] + [len(c) for c in cats]).astype(np.int64),
        **_nodes_of([p for iteration in model._predictors for p in iteration]),
        "known_bitsets": np.asarray(known_bitsets).reshape(-1, 8),
        "known_map": np.asarray(known_map),
    }
    return {k: np.asarray(arrays[k], dtype=dt, order="C") for k, (dt, _) in _SPEC.items()}


def _check_exportable(model) -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor  # lazy: as in export

    where = type(model).__name__
    if not isinstance(model, HistGradientBoostingRegressor):
        raise UserError(f"cannot export a {where} as trees", where="raysweep.serve.trees.export",
                        fix="pass a fitted sklearn HistGradientBoostingRegressor")
    if not hasattr(model, "_predictors"):
        raise UserError("the HistGradientBoostingRegressor is not fitted", where=where,
                        fix="call .fit(x, y) before exporting it")
    if model.loss not in LOSSES:
        raise UserError(f"loss {model.loss!r} cannot be exported as trees", where=where,
                        fix=f"fit with loss in {LOSSES} (identity link); other losses change "
                            "the prediction's link and are not implemented")
    if model.n_trees_per_iteration_ != 1 or np.size(model._baseline_prediction) != 1:
        raise UserError("expected one tree per iteration (a single-output regressor)", where=where)


def _categories_of(model) -> tuple[np.ndarray, list[np.ndarray]]:
    """The categorical columns and each one's known categories: sklearn >= 1.4 ordinal-encodes
    them and moves them first, so the trees' feature indices need both."""
    prep = getattr(model, "_preprocessor", None)
    if prep is None:
        return np.zeros(0, np.int64), []
    cat_columns = np.flatnonzero(model.is_categorical_).astype(np.int64)
    cats = []
    for c, found in zip(cat_columns, prep.named_transformers_["encoder"].categories_,
                        strict=True):
        if found.dtype.kind not in "iuf":
            raise UserError(f"categorical column {c} has non-numeric categories "
                            f"({found.dtype})", where=type(model).__name__,
                            fix="encode the categories as numbers before fitting")
        found = found.astype(np.float64)
        cats.append(found[~np.isnan(found)])  # NaN is the missing value, not a category
    return cat_columns, cats


def _nodes_of(trees: list) -> dict[str, np.ndarray]:
    """Every tree's nodes concatenated (child and bitset indices made global), their roots and
    the categorical splits' left bitsets."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _NODE_KEYS}
    roots, bitsets, n_nodes, n_bitsets = [], [], 0, 0
    for tree in trees:
        nodes = tree.nodes
        roots.append(n_nodes)
        parts["node_value"].append(nodes["value"])
        parts["node_feature"].append(nodes["feature_idx"])
        parts["node_threshold"].append(nodes["num_threshold"])
        parts["node_missing_left"].append(nodes["missing_go_to_left"])
        parts["node_left"].append(nodes["left"].astype(np.int64) + n_nodes)
        parts["node_right"].append(nodes["right"].astype(np.int64) + n_nodes)
        parts["node_is_leaf"].append(nodes["is_leaf"])
        parts["node_is_categorical"].append(nodes["is_categorical"])
        parts["node_bitset"].append(nodes["bitset_idx"].astype(np.int64) + n_bitsets)
        bitsets.append(tree.raw_left_cat_bitsets.reshape(-1, 8))
        n_nodes += len(nodes)
        n_bitsets += len(bitsets[-1])
    return {"tree_roots": np.array(roots, dtype=np.int64),
            **{k: np.concatenate(v) for k, v in parts.items()},
            "left_bitsets": np.concatenate(bitsets) if bitsets else np.zeros((0, 8))}


class Trees:
    """One exported regressor: `predict(x)` equals the sklearn model's `predict(x)`."""

    def __init__(self, a: dict[str, np.ndarray], where: str):
        self._a, self.where = a, where
        self.n_features = int(a["n_features"])
        self.sklearn_version = _untext(a["sklearn_version"])
        self.loss = _untext(a["loss"])
        cat_columns = a["cat_columns"]
        rest = np.setdiff1d(np.arange(self.n_features), cat_columns)
        self._order = np.concatenate([cat_columns, rest])  # sklearn's column order in the trees

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], where: str = "tree arrays") -> Trees:
        """Check arrays written by `export` (types, shapes, every index in range, trees acyclic)
        so that predicting from them cannot fail or loop; anything else is a UserError."""
        fix = "re-export the model with raysweep.serve.trees (or re-run the fit that wrote it)"

        def bad(what: str) -> UserError:
            return UserError(f"not a valid raysweep tree export: {what}", where=where, fix=fix)

        missing = [k for k in _SPEC if k not in arrays]
        if missing:
            raise bad(f"missing {', '.join(missing)}")
        a = {}
        for k, (dt, ndim) in _SPEC.items():
            v = np.asarray(arrays[k])
            if v.ndim != ndim or v.dtype.kind not in ("f" if dt is np.float64 else "iub"):
                raise bad(f"{k} is {v.dtype}{list(v.shape)}, expected {np.dtype(dt)} with "
                          f"{ndim} dimension(s)")
            a[k] = np.asarray(v, dtype=dt, order="C")
        if int(a["format_version"]) != FORMAT:
            raise UserError(f"tree export format {int(a['format_version'])} is not the format "
                            f"this raysweep reads ({FORMAT})", where=where, fix=fix)
        if _untext(a["loss"]) not in LOSSES:
            raise bad(f"loss {_untext(a['loss'])!r} is not one of {LOSSES}")

        n_features, n_nodes = int(a["n_features"]), len(a["node_value"])
        if any(len(a[k]) != n_nodes for k in _NODE_KEYS):
            raise bad("node arrays differ in length")
        cols, off = a["cat_columns"], a["cat_offsets"]
        if (n_features < 1 or np.any((cols < 0) | (cols >= n_features))
                or np.any(np.diff(cols) <= 0)):
            raise bad("categorical column indices out of range or not increasing")
        if (len(off) != len(cols) + 1 or off[0] != 0 or off[-1] != len(a["cat_values"])
                or np.any(np.diff(off) < 0)):
            raise bad("cat_offsets do not match cat_values")
        for i in range(len(cols)):
            v = a["cat_values"][off[i]:off[i + 1]]
            if np.any(np.isnan(v)) or np.any(np.diff(v) <= 0):
                raise bad(f"categories of column {cols[i]} are not sorted and distinct")
        if a["left_bitsets"].shape[1:] != (8,) or a["known_bitsets"].shape[1:] != (8,):
            raise bad("bitsets are not (n, 8)")
        roots = a["tree_roots"]
        if np.any((roots < 0) | (roots >= n_nodes)):
            raise bad("tree roots out of range")
        split = a["node_is_leaf"] == 0
        own = np.flatnonzero(split)
        cat = split & (a["node_is_categorical"] != 0)
        if (np.any((a["node_feature"][split] < 0) | (a["node_feature"][split] >= n_features))
                # children after their parent (sklearn's layout): no cycle, depth bounded
                or np.any((a["node_left"][split] <= own) | (a["node_left"][split] >= n_nodes))
                or np.any((a["node_right"][split] <= own) | (a["node_right"][split] >= n_nodes))
                or np.any((a["node_bitset"][cat] < 0)
                          | (a["node_bitset"][cat] >= len(a["left_bitsets"])))):
            raise bad("node indices out of range")
        if len(a["known_map"]) != n_features or np.any(
                (a["known_map"][a["node_feature"][cat]] < 0)
                | (a["known_map"][a["node_feature"][cat]] >= len(a["known_bitsets"]))):
            raise bad("known-category map out of range")
        return cls(a, where)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, n_features) inputs (NaN = missing) -> (N,) float64, equal to sklearn's predict."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise UserError(f"the gradient-boosting model takes {self.n_features} input columns, "
                            f"got an array of shape {x.shape}", where=self.where,
                            fix="build the inputs the way they were built at fit time "
                                "(same features, same order)")
        a = self._a
        x = x[:, self._order]  # a copy: encoding below does not touch the caller's array
        for i in range(len(a["cat_columns"])):
            x[:, i] = _encode(x[:, i], a["cat_values"][a["cat_offsets"][i]:a["cat_offsets"][i + 1]])
        n_trees = len(a["tree_roots"])
        out = np.zeros(len(x))
        out += a["baseline"]  # sklearn: zeros + baseline, then each tree in turn
        chunk = max(1, _ROWS_PER_CHUNK_TIMES_TREES // max(n_trees, 1))
        for start in range(0, len(x), chunk):
            leaves = a["node_value"][self._leaves(x[start:start + chunk])]
            o = out[start:start + chunk]
            for t in range(n_trees):
                o += leaves[:, t]
        return out

    def _leaves(self, x: np.ndarray) -> np.ndarray:
        """(rows, trees) index of the leaf each row reaches in each tree, one depth level at a
        time over the (row, tree) pairs that are still at a split."""
        a = self._a
        n_trees = len(a["tree_roots"])
        node = np.tile(a["tree_roots"], (len(x), 1)).ravel()
        row = np.repeat(np.arange(len(x)), n_trees)
        live = np.flatnonzero(a["node_is_leaf"][node] == 0)
        while live.size:
            n = node[live]
            v = x[row[live], a["node_feature"][n]]
            missing = np.isnan(v)
            left = v <= a["node_threshold"][n]
            cat = np.flatnonzero((a["node_is_categorical"][n] != 0) & ~missing)
            if cat.size:
                in_left, known = self._categories(v[cat], n[cat])
                left[cat] = in_left
                missing[cat] = ~in_left & ~known  # unknown category: the missing value's way
            left = np.where(missing, a["node_missing_left"][n] != 0, left)
            n = np.where(left, a["node_left"][n], a["node_right"][n])
            node[live] = n
            live = live[a["node_is_leaf"][n] == 0]
        return node.reshape(len(x), n_trees)

    def _categories(self, v: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For categorical values `v` (not NaN) at nodes `n`: in the node's left bitset, and
        known at fit. sklearn casts the value to uint8; a negative value counts as unknown, and
        so does one past 255 (no bitset holds it; sklearn's C cast is undefined there)."""
        a = self._a
        ok = (v >= 0) & (v < 256)
        c = np.where(ok, v, 0).astype(np.int64)  # truncates toward zero, like the C cast
        word, bit = c >> 5, (c & 31).astype(np.uint32)
        in_left = (a["left_bitsets"][a["node_bitset"][n], word] >> bit) & 1
        f = a["known_map"][a["node_feature"][n]]
        known = (a["known_bitsets"][f, word] >> bit) & 1
        return ok & (in_left == 1), ok & (known == 1)


def _encode(v: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """sklearn's OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=nan): the index
    of `v` among the sorted known categories; NaN where `v` is NaN or unknown."""
    if categories.size == 0:
        return np.full(v.shape, np.nan)
    i = np.minimum(np.searchsorted(categories, v), categories.size - 1)
    return np.where(categories[i] == v, i.astype(np.float64), np.nan)


def save(path: str | os.PathLike, models: list) -> None:
    """Several fitted regressors (e.g. one per Lab channel) into one .npz, written atomically."""
    path = Path(path)
    arrays = {"format_version": np.array(FORMAT, dtype=np.int64),
              "n_models": np.array(len(models), dtype=np.int64)}
    for i, model in enumerate(models):
        arrays.update({f"model{i}.{k}": v for k, v in export(model).items()})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # a file object: savez would append .npz to a name
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike) -> list[Trees]:
    """The regressors `save` wrote, as `Trees`; read with allow_pickle=False, so nothing runs."""
    path = Path(path)
    fix = "re-save the gradient-boosting models with raysweep.serve.trees.save"
    if not path.is_file():
        raise UserError("tree file not found", where=str(path), fix=fix)
    try:
        with path.open("rb") as f:
            if f.read(4) != b"PK\x03\x04":  # else numpy takes any other file for a pickle
                raise UserError("not a raysweep tree file (not an .npz archive)",
                                where=str(path), fix=fix)
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}  # reads every member: truncation shows here
    except ValueError as e:  # numpy's text advises allow_pickle=True: the opposite of the fix
        raise UserError("the tree file holds something other than plain arrays (pickled "
                        "objects are never loaded)", where=str(path), fix=fix) from e
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise UserError(f"cannot read the tree file ({type(e).__name__}: {e})", where=str(path),
                        fix=fix) from e
    n, version = arrays.get("n_models"), arrays.get("format_version")
    if (n is None or version is None or n.ndim or version.ndim
            or n.dtype.kind not in "iu" or version.dtype.kind not in "iu"):
        raise UserError("not a raysweep tree file (no n_models / format_version)",
                        where=str(path), fix=fix)
    if int(version) != FORMAT:
        raise UserError(f"tree file format {int(version)} is not the format this raysweep reads "
                        f"({FORMAT})", where=str(path), fix=fix)
    out = []
    for i in range(int(n)):
        prefix = f"model{i}."
        out.append(Trees.from_arrays(
            {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)},
            where=f"{path} (model {i})"))
    return out
