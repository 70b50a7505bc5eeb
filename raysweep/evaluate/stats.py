"""Bootstrap confidence intervals for error summaries, and paired comparisons.

A test split of a few hundred photos makes a 0.2 dE00 difference between two sweep leaders easy
to over-read, so every number in a report carries a percentile-bootstrap 95% interval. The
comparison of two models is paired: both are resampled with the SAME photo indices, so the
interval reflects how the models differ on the same photos rather than how hard the photos are.

Everything is vectorised (one (B, n) index matrix per call) and seeded, so a report is
reproducible bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from raysweep.color import delta_e00, delta_e76
from raysweep.errors import unknown_name

STATS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    # each takes a (B, n) matrix and reduces over axis 1
    "mean": lambda x: x.mean(axis=1),
    "median": lambda x: np.median(x, axis=1),
    "p95": lambda x: np.percentile(x, 95, axis=1),
}
DEFAULT_BOOT = 2000
_CHUNK_ELEMS = 4_000_000  # bounds memory: B*n float64 resamples are built in chunks


def _stat_fn(stat: str) -> Callable[[np.ndarray], np.ndarray]:
    if stat not in STATS:
        raise unknown_name("statistic", stat, list(STATS))
    return STATS[stat]


def _clean(values: np.ndarray, name: str = "values") -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"{name} is empty: nothing to summarise")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} has {int((~np.isfinite(x)).sum())} non-finite entries")
    return x


def _resampled(columns: list[np.ndarray], stat: str, n_boot: int, seed: int) -> list[np.ndarray]:
    """Bootstrap replicates of `stat` for each column, all using the same resampling indices."""
    fn = _stat_fn(stat)
    n = columns[0].size
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMS // max(n, 1))
    out: list[list[np.ndarray]] = [[] for _ in columns]
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        for k, col in enumerate(columns):
            out[k].append(fn(col[idx]))
        done += b
    return [np.concatenate(parts) for parts in out]


def bootstrap_ci(values, stat: str = "mean", n_boot: int = DEFAULT_BOOT, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """(point estimate, lower, upper) percentile-bootstrap interval of `stat` over `values`."""
    x = _clean(values)
    point = float(_stat_fn(stat)(x[None, :])[0])
    if x.size == 1:
        return point, point, point
    reps = _resampled([x], stat, n_boot, seed)[0]
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(reps, [tail, 100 - tail])
    return point, float(lo), float(hi)


def summarize(values, n_boot: int = DEFAULT_BOOT, seed: int = 0, level: float = 0.95,
              prefix: str = "") -> dict[str, float]:
    """Mean, median and p95 with intervals, as a flat dict (`mean`, `mean_lo`, `mean_hi`, ...)."""
    out: dict[str, float] = {f"{prefix}n": float(np.asarray(values).size)}
    for stat in STATS:
        point, lo, hi = bootstrap_ci(values, stat, n_boot=n_boot, seed=seed, level=level)
        out[f"{prefix}{stat}"], out[f"{prefix}{stat}_lo"], out[f"{prefix}{stat}_hi"] = point, lo, hi
    return out


def paired_bootstrap(a, b, stat: str = "mean", n_boot: int = DEFAULT_BOOT, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """stat(a) - stat(b) on the same photos, with a paired-bootstrap interval.

    `a` and `b` are per-photo errors of two models, aligned by photo. `p_value` is the two-sided
    bootstrap share of replicates on the other side of zero (a rough guide, not a test to
    chase). A negative `diff` means `a` has the smaller error.
    """
    x, y = _clean(a, "a"), _clean(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired comparison needs aligned errors, got {x.size} and {y.size}")
    fn = _stat_fn(stat)
    diff = float(fn(x[None, :])[0] - fn(y[None, :])[0])
    if x.size == 1:
        return {"diff": diff, "lo": diff, "hi": diff, "p_value": 1.0, "n": 1.0}
    ra, rb = _resampled([x, y], stat, n_boot, seed)
    reps = ra - rb
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(reps, [tail, 100 - tail])
    # share of replicates whose sign disagrees with the observed difference, doubled
    if diff == 0:
        p = 1.0
    else:
        p = float(min(1.0, 2 * np.mean(np.sign(reps) != np.sign(diff))))
    return {"diff": diff, "lo": float(lo), "hi": float(hi), "p_value": p, "n": float(x.size)}


def errors_of(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-photo (dE00, dE76) of predictions against targets, in float64."""
    p = torch.as_tensor(np.asarray(pred, np.float64))
    t = torch.as_tensor(np.asarray(target, np.float64))
    return delta_e00(p, t).numpy(), delta_e76(p, t).numpy()


def cluster_bootstrap_ci(values, first, second=None, n_boot: int = DEFAULT_BOOT, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lower, upper): an interval for the mean of photos that cluster in two crossed ways.

    Photos of one capture session share its light and photos of one tone share its skin, so
    neither is an independent draw: resampling photos makes the interval far too narrow. This
    is the pigeonhole bootstrap (Owen 2007): the `first` clusters (sessions) and the `second`
    (tones) are resampled with replacement, each independently, and a photo counts as often as
    its session times its tone was drawn. With `second` None it is the one-way cluster bootstrap.
    """
    x = _clean(values)
    point = float(x.mean())
    ia = np.unique(np.asarray(first).astype(str), return_inverse=True)[1]
    ib = (np.zeros(x.size, int) if second is None
          else np.unique(np.asarray(second).astype(str), return_inverse=True)[1])
    na, nb = ia.max() + 1, ib.max() + 1
    if na * nb == 1 or x.size == 1:
        return point, point, point
    rng = np.random.default_rng(seed)
    reps = []
    chunk = max(1, _CHUNK_ELEMS // x.size)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        wa = _counts(rng, b, na)
        wb = _counts(rng, b, nb) if nb > 1 else np.ones((b, 1))
        w = wa[:, ia] * wb[:, ib]
        tot = w.sum(1)
        ok = tot > 0  # a draw whose sessions and tones share no photo says nothing
        reps.append((w[ok] @ x) / tot[ok])
    r = np.concatenate(reps)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(r, [tail, 100 - tail])
    return point, float(lo), float(hi)


def _counts(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """(b, n): how often each of n clusters is drawn in b resamples of size n."""
    idx = rng.integers(0, n, size=(b, n))
    out = np.zeros((b, n))
    np.add.at(out, (np.repeat(np.arange(b), n), idx.ravel()), 1.0)
    return out
