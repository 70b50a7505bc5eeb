"""Classical reference methods, evaluated on the same split as the sweep's leaders.

A learned model is only interesting by how much it beats what a colour scientist would do without
one. Each baseline is `fit(train: Prepared) -> self` then `predict(test: Prepared) -> (N, 3) Lab`:

- `naive`: the patch mean sRGB -> Lab as measured from the photo (`Prepared.mean_lab`).
- `grey_world`: von Kries gains that make the whole crop's mean neutral, then an exposure
  normalisation by that mean's luminance; one scale (the assumed scene reflectance) is fitted.
- `bg_reference`: the same with the background ring as the neutral reference (its median from
  prepare's ring statistics, else the ring of a `*_bg` crop), ONLY on photos whose background is
  neutral (the manifest's `background_type`, else as the ring looks); the other photos get the
  naive answer, since dividing by a coloured surface paints its complement onto the skin. The
  report's breakdown by background shows both kinds.
- `root_poly`: Finlayson, Mackiewicz & Hurlbert (2015) degree-2 root-polynomial colour correction
  from the patch's linear RGB to XYZ, fitted by least squares on the training split.
- `gbm`: gradient-boosted trees (one per Lab channel) on the `mean+meta` features and camera id.
- `gbm_context`: the same trees given the background-ring statistics too (linear percentiles of
  the surround, log patch / ring): the light reference the photo carries.
- `gbm_inv`: the same trees on the patch colour, the session-invariant block (raysweep.data.
  invariant: the patch over its ring, in lightness and chromaticity) and the camera, WITHOUT the
  raw EXIF and ring levels, which name a session rather than correct for it (the new-session
  benchmark's session folds, split seeds 0-2: mean out-of-fold dE00 5.13 against 8.40 for
  `gbm`; with the patch's brightness per unit of exposure, which the block has no longer, 6.46);
  without ring statistics the block is all missing and the trees see the patch colour and the
  camera.
- `gbm_inv_l1`: `gbm_inv` fitting each channel's median (absolute-error loss): on a new session
  the same patch/ring ratio can mean a light swatch on a dark background or a dark one on a
  light background, and a mean dE00 pays less at one answer than between them (session 26's
  new-session run, benchmarks/results/new_sessions_s26_quick.md: mean out-of-fold dE00 over its
  3 seeds 6.13 against 6.46 for `gbm_inv`).
- `per_session`: a ridge regression per capture session (`set_id`), quadratic in log linear patch
  RGB and log ring median, linear in EXIF. Within one session the light and the camera are fixed, so a
  small smooth map suffices; it is only defined for sessions seen in training, so on a split that
  holds sessions out it is skipped with the reason.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from raysweep import color
from raysweep.data.crop import CropParams
from raysweep.data.prepared import Prepared
from raysweep.data.ring import p50
from raysweep.errors import UserError, unknown_name
from raysweep.evaluate.breakdowns import background_type, is_neutral
from raysweep.models.gbm import (
    GradientBoosted,
    GradientBoostedContext,
    GradientBoostedInvariant,
    GradientBoostedInvariantL1,
    ring_features,
)

# Background ring of an adaptive_bg crop as a fraction of its side at CropParams' default
# bg_margin (0.25 per edge): what _ring_fraction gives such a crop without recorded params.
DEFAULT_RING_FRACTION = 1 / 6


# ---- numpy wrappers over the torch colour math (float64) ---------------------------------------

def _t(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def lab_to_linear(lab: np.ndarray) -> np.ndarray:
    return color.lab_to_linear_srgb(_t(lab)).numpy()


def linear_to_lab(lin: np.ndarray) -> np.ndarray:
    return color.linear_srgb_to_lab(_t(lin)).numpy()


def luminance(lin: np.ndarray) -> np.ndarray:
    return color.linear_srgb_to_xyz(_t(lin)).numpy()[..., 1]


_LINEAR_LUT = color.srgb_to_linear(torch.arange(256, dtype=torch.float64) / 255.0).numpy()


def _ring_fraction(data: Prepared) -> float:
    """Background ring width (fraction of the side) of the data's crop, from the crop geometry.

    adaptive_bg grows the patch box by `bg_margin` per edge, so the ring is m / (1 + 2m) of the
    side; center_bg doubles (`bg_scale`) the centre window, so the outer quarter per edge is
    context. Crops without background have no ring.
    """
    crop = str(data.info.get("crop", ""))
    if not crop.endswith("_bg"):
        return 0.0
    recorded = data.info.get("params") or {}  # the CropParams prepare used, when recorded
    defaults = vars(CropParams())  # the crop module owns the geometry
    bg_scale = float(recorded.get("bg_scale", defaults["bg_scale"]))
    bg_margin = float(recorded.get("bg_margin", defaults["bg_margin"]))
    if crop.startswith("center"):
        return (1 - 1 / bg_scale) / 2
    return bg_margin / (1 + 2 * bg_margin)


def region_means(images: np.ndarray, ring: float, chunk: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear-RGB means of (whole crop, inner patch, outer ring) per image, each (N, 3).

    Averaging happens in linear light: the mean of sRGB codes is not the colour of the light.
    A ring of 0 means the crop has no background: the patch is the whole crop, the ring is NaN.
    """
    n, _, s, _ = images.shape
    w = int(round(s * ring))
    if ring > 0 and not 1 <= w < s / 2:
        raise ValueError(f"a ring fraction of {ring} is not a usable ring in a {s} px crop")
    inner = np.zeros((s, s), dtype=bool)
    inner[w:s - w, w:s - w] = True
    whole, patch, bg = (np.full((n, 3), np.nan) for _ in range(3))
    for start in range(0, n, chunk):
        lin = _LINEAR_LUT[images[start:start + chunk]]  # (b, 3, s, s) float64
        whole[start:start + chunk] = lin.mean(axis=(2, 3))
        patch[start:start + chunk] = lin[:, :, inner].mean(axis=2)
        if w:
            bg[start:start + chunk] = lin[:, :, ~inner].mean(axis=2)
    return whole, patch, bg


def _patch_linear(data: Prepared) -> np.ndarray:
    """Linear RGB of the patch mean: from mean_lab, filled from the crop where mean_lab is NaN."""
    lin = lab_to_linear(np.nan_to_num(data.mean_lab, nan=50.0))
    missing = ~np.isfinite(data.mean_lab).all(axis=1)
    if missing.any():
        if data.images is None:
            raise UserError(f"{int(missing.sum())} rows have no patch mean colour and no image",
                            where="baselines", fix="provide mean_L/mean_a/mean_b or images")
        ring = _ring_fraction(data)
        lin[missing] = region_means(data.images[missing], ring)[1]
    return lin


def _has_bg(data: Prepared) -> bool:
    return str(data.info.get("crop", "")).endswith("_bg")


# ---- the methods ---------------------------------------------------------------------------------

class Naive:
    """What the camera says: the patch mean colour, no correction."""

    needs_images = False

    def fit(self, train: Prepared) -> Naive:
        return self

    def predict(self, test: Prepared) -> np.ndarray:
        return linear_to_lab(_patch_linear(test))


class _ReferenceWhiteBalance:
    """Von Kries on a reference region assumed neutral, then exposure normalised by its luminance.

    corrected = patch * (Y_ref / ref_c) / Y_ref * k = patch / ref_c * k, per channel: the
    reference becomes a neutral grey of luminance k. k (the reference's true reflectance, which
    no photo tells) is the one constant fitted on the training split, as a median ratio.
    """

    needs_images = True
    region = "whole"
    k = 1.0

    def _reference(self, data: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """(patch linear RGB, reference linear RGB), each (N, 3)."""
        if self.region == "bg" and data.ring is not None:
            return _patch_linear(data), p50(data.ring).astype(np.float64)
        if data.images is None:
            raise UserError(f"the {self.region} reference needs images, this dataset is tabular",
                            where="baselines", fix="run image baselines on an image dataset")
        if self.region == "bg" and not _has_bg(data):
            raise UserError(f"bg_reference needs a crop with background, got "
                            f"{data.info.get('crop')!r}", where="baselines",
                            fix="load the data with crop=adaptive_bg or center_bg")
        ring = _ring_fraction(data)
        whole, patch, bg = region_means(data.images, ring)
        return patch, (bg if self.region == "bg" else whole)

    def _usable(self, data: Prepared) -> np.ndarray:
        """Rows whose reference may be taken as neutral (every row for the whole crop)."""
        return np.ones(len(data), bool)

    def _corrected(self, data: Prepared) -> np.ndarray:
        patch, ref = self._reference(data)
        ref = np.maximum(np.nan_to_num(ref, nan=1e-6), 1e-6)  # a black reference: huge gains
        return patch / ref

    def fit(self, train: Prepared) -> _ReferenceWhiteBalance:
        use = self._usable(train)
        corrected = self._corrected(train)[use]
        y_true = color.lab_to_xyz(_t(train.target[use])).numpy()[:, 1]
        y_pred = luminance(corrected)
        ok = (y_pred > 1e-9) & np.isfinite(y_pred)
        if not ok.any():
            raise UserError("white balance reference is black (or absent) on every training "
                            "photo", where="baselines")
        self.k = float(np.median(y_true[ok] / y_pred[ok]))
        return self

    def predict(self, test: Prepared) -> np.ndarray:
        out = linear_to_lab(self._corrected(test) * self.k)
        use = self._usable(test)
        if not use.all():
            out[~use] = Naive().predict(test.subset(np.flatnonzero(~use)))
        return out


class GreyWorld(_ReferenceWhiteBalance):
    """Grey-world over the whole crop (patch plus any background)."""

    region = "whole"


class BackgroundReference(_ReferenceWhiteBalance):
    """The background ring as the reference, where the background is neutral; naive elsewhere."""

    region = "bg"

    @staticmethod
    def why_not(train: Prepared, test: Prepared) -> str | None:
        if test.ring is None and (test.images is None or not _has_bg(test)):
            return f"needs ring statistics or a *_bg crop, data has {test.info.get('crop')!r}"
        if background_type(train) is None or background_type(test) is None:
            return "cannot tell neutral backgrounds from coloured ones (no background_type " \
                   "column, no ring statistics)"
        if not is_neutral(background_type(train)).any():
            return "no training photo has a neutral background"
        return None

    def _usable(self, data: Prepared) -> np.ndarray:
        kinds = background_type(data)
        use = is_neutral(kinds) if kinds is not None else np.ones(len(data), bool)
        if data.ring is not None:
            use &= np.isfinite(data.ring).all(1)
        return use


def root_poly_features(lin: np.ndarray) -> np.ndarray:
    """Degree-2 root-polynomial terms: R, G, B, sqrt(RG), sqrt(GB), sqrt(RB).

    Every term scales linearly with exposure, so the correction is exposure-invariant, unlike
    an ordinary polynomial (the point of Finlayson et al. 2015).
    """
    x = np.clip(lin, 0.0, None)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    return np.stack([r, g, b, np.sqrt(r * g), np.sqrt(g * b), np.sqrt(r * b)], axis=1)


class RootPolynomial:
    needs_images = False

    def fit(self, train: Prepared) -> RootPolynomial:
        x = root_poly_features(_patch_linear(train))
        y = color.lab_to_xyz(_t(train.target)).numpy()
        self.matrix, *_ = np.linalg.lstsq(x, y, rcond=None)  # (6, 3)
        return self

    def predict(self, test: Prepared) -> np.ndarray:
        xyz = root_poly_features(_patch_linear(test)) @ self.matrix
        return color.xyz_to_lab(_t(xyz)).numpy()


def _nanmedian(x: np.ndarray) -> np.ndarray:
    """Column medians; NaN (no warning) for a column with no value at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(x, axis=0)


def sessions(data: Prepared) -> np.ndarray | None:
    if "set_id" not in data.frame.columns:
        return None
    return data.frame["set_id"].astype(str).str.strip().to_numpy()


class PerSession:
    """A quadratic ridge per capture session: log linear patch RGB, log ring median, EXIF -> Lab.

    Each session's columns are imputed with its training medians, columns constant within the
    session are dropped, the rest standardised; the light-reference block (log patch, log ring
    median) is expanded to degree 2 and EXIF enters linearly (with ~100 photos a session, a full
    quadratic in all 11 columns over-fits: 2.26 against 1.66 mean dE00 on the default synthetic
    test photos); the ridge strength is chosen per session by efficient leave-one-out (RidgeCV). A session's own light and camera are
    thereby learnt from its own training photos, which is what a lab would do with a reference
    chart per session, and why the method says nothing about a session it has not seen.
    """

    needs_images = False
    alphas = np.logspace(-3, 3, 13)

    @staticmethod
    def why_not(train: Prepared, test: Prepared) -> str | None:
        seen, want = sessions(train), sessions(test)
        if seen is None or want is None:
            return "needs a set_id column (capture sessions)"
        unseen = sorted(set(want) - set(seen))
        if unseen:
            return (f"{len(unseen)} of {len(set(want))} test session(s) were never seen in "
                    f"training ({', '.join(unseen[:5])}{' ...' if len(unseen) > 5 else ''}): "
                    "a per-session fit says nothing about a new session")
        return None

    n_quadratic = 6  # the first columns of _inputs: log patch RGB, log ring median

    @staticmethod
    def _inputs(data: Prepared) -> np.ndarray:
        patch = np.log(np.maximum(_patch_linear(data), 1e-4))
        ring = ring_features(data)[:, 3:6]  # log ring median
        return np.column_stack([patch, ring, data.meta]).astype(np.float64)

    def fit(self, train: Prepared) -> PerSession:
        from sklearn.linear_model import RidgeCV

        x, s = self._inputs(train), sessions(train)
        self.models = {}
        pooled = _nanmedian(x)
        for sid in np.unique(s):
            rows = s == sid
            xs = x[rows]
            med = _nanmedian(xs)
            fill = np.where(np.isfinite(med), med, pooled)
            xs = np.where(np.isfinite(xs), xs, fill)
            sd = xs.std(0)
            keep = np.isfinite(sd) & (sd > 1e-6)
            mu, sd = xs[:, keep].mean(0), sd[keep]
            n_quad = int(keep[:self.n_quadratic].sum())
            z = self._expand((xs[:, keep] - mu) / sd, n_quad)
            model = RidgeCV(alphas=self.alphas).fit(z, train.target[rows].astype(np.float64))
            self.models[sid] = (fill, keep, mu, sd, n_quad, model)
        return self

    @staticmethod
    def _expand(z: np.ndarray, n_quad: int) -> np.ndarray:
        """z plus the degree-2 products of its first n_quad columns."""
        q = z[:, :n_quad]
        iu = np.triu_indices(n_quad)
        return np.column_stack([z, (q[:, :, None] * q[:, None, :])[:, iu[0], iu[1]]])

    def predict(self, test: Prepared) -> np.ndarray:
        x, s = self._inputs(test), sessions(test)
        out = np.full((len(test), 3), np.nan)
        for sid in np.unique(s):
            if sid not in self.models:
                raise UserError(f"session {sid} was not in the training split",
                                where="baseline per_session", fix="see PerSession.why_not")
            fill, keep, mu, sd, n_quad, model = self.models[sid]
            rows = s == sid
            xs = np.where(np.isfinite(x[rows]), x[rows], fill)
            out[rows] = model.predict(self._expand((xs[:, keep] - mu) / sd, n_quad))
        return out


BASELINES = {
    "naive": Naive,
    "grey_world": GreyWorld,
    "bg_reference": BackgroundReference,
    "root_poly": RootPolynomial,
    "gbm": GradientBoosted,
    "gbm_context": GradientBoostedContext,
    "gbm_inv": GradientBoostedInvariant,
    "gbm_inv_l1": GradientBoostedInvariantL1,
    "per_session": PerSession,
}


def make_baseline(name: str):
    if name not in BASELINES:
        raise unknown_name("baseline", name, list(BASELINES), where="raysweep.evaluate.baselines")
    return BASELINES[name]()


def fit_baselines(train: Prepared, test: Prepared, names=None) -> tuple[dict, dict[str, str]]:
    """Each baseline that can run on `test`, fitted on `train`: ({name: fitted}, {name: why
    skipped})."""
    fitted, skipped = {}, {}
    for name in names or list(BASELINES):
        model = make_baseline(name)
        if model.needs_images and test.images is None:
            skipped[name] = "needs images (tabular dataset)"
            continue
        why = model.why_not(train, test) if hasattr(model, "why_not") else None
        if why:
            skipped[name] = why
            continue
        fitted[name] = model.fit(train)
    return fitted, skipped


def run_baselines(train: Prepared, test: Prepared, names=None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Fit each baseline on `train`, predict `test`: ({name: (N, 3) Lab}, {name: why skipped})."""
    fitted, skipped = fit_baselines(train, test, names)
    return {n: np.asarray(m.predict(test), dtype=np.float64) for n, m in fitted.items()}, skipped
