"""Gradient-boosting model families: one sklearn HistGradientBoostingRegressor per Lab channel on
a Prepared dataset's tabular inputs (patch colour, metadata, ring statistics or the session-invariant
block, camera id). What each family is for is in raysweep.evaluate.baselines, which scores them as
baselines; eval_winners' session folds may crown one, and raysweep.serve.family saves and serves it.
They live on the model layer so that serving them needs nothing from evaluation.
"""

from __future__ import annotations

import contextlib

import numpy as np

from raysweep.data.invariant import invariant_inputs
from raysweep.data.prepared import Prepared


class GradientBoosted:
    """HistGradientBoosting per Lab channel on mean Lab + metadata + camera (NaN handled natively)."""

    needs_images = False

    def __init__(self, max_iter: int = 300, learning_rate: float = 0.05, seed: int = 0):
        self.params = dict(max_iter=max_iter, learning_rate=learning_rate, random_state=seed,
                           early_stopping=False)

    def _context(self, data: Prepared) -> list[np.ndarray]:
        return [data.mean_lab, data.meta]

    def _features(self, data: Prepared) -> np.ndarray:
        cam = np.array([self.cameras.get(c, np.nan) for c in data.camera], dtype=np.float64)
        x = np.column_stack([*self._context(data), cam]).astype(np.float64)
        return x[:, self.keep]

    def fit(self, train: Prepared) -> GradientBoosted:
        # lazy: sklearn (a second of imports) loads only where gradient boosting is fitted
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.cameras = {c: i for i, c in enumerate(sorted(set(train.camera)))}
        self.keep = slice(None)
        x = self._features(train)
        # a column with fewer than two distinct values (e.g. a metadata field no camera wrote)
        # carries nothing, and sklearn cannot bin an all-NaN column
        self.keep = np.array([np.unique(c[np.isfinite(c)]).size > 1 for c in x.T])
        self.keep[-1] = True
        x = x[:, self.keep]
        cat = np.zeros(x.shape[1], dtype=bool)
        cat[-1] = True  # camera id: unseen cameras become NaN, the missing bucket
        with one_openmp_thread():
            self.models = [
                HistGradientBoostingRegressor(categorical_features=cat, **self.params)
                .fit(x, train.target[:, k]) for k in range(3)
            ]
        return self

    def predict(self, test: Prepared) -> np.ndarray:
        x = self._features(test)
        with one_openmp_thread():
            return np.stack([m.predict(x) for m in self.models], axis=1)


def one_openmp_thread():
    """sklearn's histogram trees run OpenMP threads that spin while they wait: on a machine
    whose cores are busy (Ray's trials, a second evaluation) one fit of 1,600 rows took 357 s
    against 0.46 s on one thread (ad hoc, 2 loaded cores). Fits this small gain little from
    threads anyway: `python -m benchmarks.gbm_threads --quick` measured 24.9 s against 0.69 s
    with every core busy, 0.48 s against 0.41 s idle (benchmarks/results/gbm_threads_quick.md)."""
    try:
        # lazy: threadpoolctl comes with scikit-learn, loaded only where trees are fitted
        from threadpoolctl import threadpool_limits
    except ImportError:  # a served family (numpy trees) in an environment without sklearn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="openmp")


def ring_features(data: Prepared) -> np.ndarray:
    """(N, 12) log ring percentiles and log patch/ring ratios; NaN where no ring (or no block)."""
    if data.ring is None:
        return np.full((len(data), 12), np.nan)
    r = data.ring.astype(np.float64)
    return np.column_stack([np.log(np.maximum(r[:, :9], 1e-4)), r[:, 9:]])


class GradientBoostedContext(GradientBoosted):
    """Gradient boosting given the light reference too: patch, ring statistics, EXIF, camera."""

    @staticmethod
    def why_not(train: Prepared, test: Prepared) -> str | None:
        if train.ring is None or test.ring is None:
            return "needs ring statistics (photos prepared by raysweep, or ring_* columns)"
        return None

    def _context(self, data: Prepared) -> list[np.ndarray]:
        return [data.mean_lab, ring_features(data), data.meta]


class GradientBoostedInvariant(GradientBoosted):
    """Gradient boosting on the patch colour, the session-invariant block and the camera."""

    def _context(self, data: Prepared) -> list[np.ndarray]:
        return [data.mean_lab, invariant_inputs(data)]


class GradientBoostedInvariantL1(GradientBoostedInvariant):
    """`gbm_inv` fitting each channel's conditional median (absolute-error loss) instead of its
    mean. On a new session the background's reflectance is unknown, so the same patch/ring
    ratio can mean a light or a dark swatch (grey card or white paper): the target is
    multi-modal, a squared loss lands between the modes, and a mean dE00 (an absolute error)
    pays less at one of them."""

    def __init__(self, max_iter: int = 300, learning_rate: float = 0.05, seed: int = 0):
        super().__init__(max_iter, learning_rate, seed)
        self.params["loss"] = "absolute_error"


FAMILIES = {"gbm": GradientBoosted, "gbm_context": GradientBoostedContext,
            "gbm_inv": GradientBoostedInvariant, "gbm_inv_l1": GradientBoostedInvariantL1}
