"""The floor and two one-photo physics references: how well the colour can be read back by an
oracle that knows a stated amount. Only `oracle:latents` is a floor; `oracle:exif` and
`oracle:observable` are hand-built estimators without labels that a learned model should beat,
and each knows something a new photo does not show (the session's true light; the background's
true reflectance and, where a ring is clipped, the other photos of its session).

Tiers (`KNOWS` says each in one line; `floors()` returns all, `evaluate(tier=...)` one):

- `oracle:latents` knows every latent of every photo (the lights, the exact exposure, the
  white-balance gains, the ISP gain field, the shading / shadow / vignetting fields and the
  specular spot, and generator 3.0's per-photo drift: drift.py): only sensor noise, JPEG and
  metamerism are left. No photo reveals all that.
- `oracle:exif` knows the session's truth (light spectra, illuminance, the camera's session
  white-balance error) and the camera's fixed pipeline, and of each photo only its EXIF exposure
  (time, ISO, f-number): not the hidden digital gain, local tone mapping, per-photo white-balance
  drift, illuminance jitter or shading.
- `oracle:observable` knows the camera's fixed pipeline and the background's reflectance (one
  measurement per session) and reads the light off the photo's own background ring (the ratio of
  swatch to ring cancels exposure, gains and illuminance); where the ring is clipped or black it
  uses the EXIF exposure times the session's pooled ring level. The light's spectrum stays
  unknown: its skin regression spans a library of lights. It never uses a per-photo hidden latent
  (it reads the swatch outline, which a crop finds, and the EXIF columns).

Each maps camera RGB of the swatch to D65 Lab with a local regression over skin spectra drawn
from the generator's prior (not the test tones themselves).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

from .context import Context, GeneratorConfig, build_context
from .exposure import FOOT_LAMBERT, K_HEAD
from .isp import log_chroma
from .light import FLUORESCENT, LED, LIGHT_SOURCES, make_light
from .measure import background_region, load_rgb, swatch_region
from .render import plan
from .skin import reflectance, sample_params
from .spectral import delta_e00, reflectance_to_lab

KNOWS = {  # tier -> exactly what it knows, one line (raysweep.evaluate.floors shows it)
    "latents": "floor: every per-photo latent (exposure, WB gains, ISP gain and look, shading, "
               "shadow, light drift, hand shade): only noise, JPEG and metamerism left; no photo "
               "reveals these",
    "exif": "one-photo physics reference, no labels: the session's TRUE light spectra, "
            "illuminance and WB error and the camera's fixed pipeline, plus the photo's EXIF "
            "exposure; not the hidden gain, tone mapping, per-photo WB, light or ISP drift, shading",
    "observable": "one-photo physics reference, no labels: the camera's fixed pipeline and the "
                  "background's TRUE reflectance (one measurement per session); the light read off "
                  "the photo's ring; where clipped, the session's ring level pooled over its "
                  "photos (test photos included)",
}
TIERS = tuple(KNOWS)
RING = (0.04, 0.14)  # the observable tier's background ring, in frame sizes from the swatch edge
HIDDEN_PER_PHOTO = (  # manifest columns no photo reveals (the observable tier must not read them)
    "lux", "exposure_error_ev", "sensor_error_ev", "digital_gain_ev", "metered_bv",
    "meter_reflectance", "ae_limited", "ltm_gain_swatch", "wb_gain_r", "wb_gain_b", "wb_error_r",
    "wb_error_b", "shading_strength", "shadow", "shadow_depth", "shadow_swatch_fraction",
    "specular_amp", "specular_x", "specular_y", "specular_sigma_px", "second_light_share",
    "target_L", "target_a", "target_b", "target_ita", "white_balance_mode", "awb_frame_error_r",
    "awb_frame_error_b", "light_drift_mired", "hand_shade_depth", "hand_fill_tint_r",
    "hand_fill_tint_b", "isp_saturation", "isp_hue_deg")


@lru_cache(maxsize=2)
def _training_skin(seed: int, n: int = 6000) -> tuple[np.ndarray, np.ndarray]:
    """Skin reflectances from the prior (a stream disjoint from the dataset's tones) and their
    D65 Lab: the oracle knows what skin can look like, not which tones were drawn."""
    refl = reflectance(sample_params(n, np.random.default_rng([seed, 999])))
    return refl, reflectance_to_lab(refl)


@lru_cache(maxsize=1)
def _light_library() -> tuple[np.ndarray, ...]:
    """What the observable tier allows the light to be: Planckian / daylight from 2500 to
    7500 K and every measured fluorescent and LED spectrum the generator draws from."""
    rng = np.random.default_rng(0)
    ccts = np.geomspace(2500, 7500, 9)
    lights = [make_light("daylight", rng, cct=float(c)).spectrum for c in ccts]
    lights += [make_light("fluorescent", rng).spectrum for _ in FLUORESCENT]
    lights += [make_light("led", rng).spectrum for _ in LED + LIGHT_SOURCES]
    return tuple(lights)


def local_linear(z_train: np.ndarray, y_train: np.ndarray, z: np.ndarray, k: int = 300,
                 h: float = 0.01) -> np.ndarray:
    """Kernel-weighted local linear regression at one query z (3,): the posterior-mean-like
    estimate of y given camera log-RGB. Far more accurate than one global polynomial on
    fluorescent and LED light, where the camera-to-XYZ map of skin bends."""
    d = ((z_train - z) ** 2).sum(1)
    idx = np.argpartition(d, k)[:k]
    w = np.sqrt(np.exp(-0.5 * d[idx] / h**2) + 1e-12)[:, None]
    a = np.c_[z_train[idx] - z, np.ones(k)] * w
    coef, *_ = np.linalg.lstsq(a, y_train[idx] * w, rcond=1e-6)
    return coef[-1]


def wb_linear(cam, img: np.ndarray, matrix: np.ndarray | None = None) -> np.ndarray:
    """Undo the camera's fixed pipeline (tone curve, matrix; a frame's own matrix when given):
    8-bit sRGB -> white-balanced raw RGB times the ISP gain (1 = sensor saturation), (S, S, 3)."""
    m = cam.matrix if matrix is None else matrix
    return cam.untone(img) @ (np.linalg.inv(m).T * K_HEAD)


def _skin_lab(ctx: Context, camera_key: str, spectrum: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    refl, lab = _training_skin(ctx.seed)
    train = ctx.cameras[camera_key].response(spectrum, refl)
    return local_linear(np.log(train), lab, np.log(np.maximum(rgb, 1e-9)))


def _session_spectrum(ctx: Context, set_idx: int, share: float) -> np.ndarray:
    resp = ctx.responses[set_idx]
    if len(resp.lights) == 1:
        return resp.lights[0]
    return (1 - share) * resp.lights[0] + share * resp.lights[1]


# ------------------------------------------------------------------ oracle:latents
def oracle_lab(ctx: Context, set_idx: int, tone_idx: int, img: np.ndarray) -> np.ndarray:
    import cv2

    p = plan(ctx, set_idx, tone_idx)
    f = p.fields
    wb = wb_linear(ctx.cameras[p.spec.camera_id], img, p.matrix) / p.isp_gain[..., None]
    clipped = wb.max(-1) > 0.97 * min(p.gains.min(), 1.0)  # clipped: no signal
    clean = wb / p.gains / (K_HEAD * 2**p.exposure.sensor_error_ev) / p.tint
    core = cv2.erode((f.mask > 0.999).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    if f.specular is not None:
        core &= f.specular < 2e-3
    core &= (img.min(-1) > 2 / 255) & (img.max(-1) < 250 / 255) & ~clipped
    if core.sum() < 20:  # nearly everything clipped: use what is left, however poor
        core = (f.mask > 0.999) & ~clipped if ((f.mask > 0.999) & ~clipped).any() else f.mask > 0.999
    second = f.second if f.second is not None else np.zeros_like(f.primary)
    light_p = (f.optics * f.primary)[core]
    light_q = (f.optics * second)[core]
    rgb = clean[core].sum(0) / (light_p + light_q).sum()
    share = light_q.sum() / (light_p + light_q).sum()
    return _skin_lab(ctx, p.spec.camera_id, _session_spectrum(ctx, set_idx, share), rgb)


# ------------------------------------------------------------------ oracle:exif
def exif_lab(ctx: Context, row: dict, img: np.ndarray) -> np.ndarray:
    s = int(row["set_id"].removeprefix("set"))
    spec, resp = ctx.sets[s], ctx.responses[s]
    cam = ctx.cameras[spec.camera_id]
    white = (1 - spec.second_share) * resp.white[0] + (
        spec.second_share * resp.white[1] if len(resp.white) > 1 else 0)
    # the camera's AWB as a session knows it: truth, its warm/cool habit, the session's error
    truth = log_chroma(white)
    est = truth + cam.spec.awb_keep_warm * (log_chroma(ctx.daylight_white[spec.camera_id]) - truth)
    est = est + spec.awb_error
    gains = np.array([np.exp(-est[0]), 1.0, np.exp(-est[1])])
    correct = 3.125 * FOOT_LAMBERT * np.pi / (spec.lux * 0.18)
    err = np.log2(row["exposure_time_s"] * row["iso"] / row["f_number"] ** 2 / correct)
    core = swatch_region(row, img.shape[0])
    rgb = wb_linear(cam, img)[core].mean(0) / gains / (K_HEAD * 2**err)
    return _skin_lab(ctx, spec.camera_id, _session_spectrum(ctx, s, spec.second_share), rgb)


# ------------------------------------------------------------------ oracle:observable
def _ratio_training(ctx: Context, set_idx: int) -> tuple[np.ndarray, np.ndarray]:
    """log(skin / background) camera RGB of prior skins under every library light -> Lab."""
    refl, lab = _training_skin(ctx.seed, 3000)
    spec = ctx.sets[set_idx]
    cam = ctx.cameras[spec.camera_id]
    z = [np.log(cam.response(li, refl) / cam.response(li, spec.background)) for li in _light_library()]
    return np.concatenate(z), np.tile(lab, (len(z), 1))


def _ring(cam, img: np.ndarray, row: dict) -> tuple[np.ndarray, np.ndarray, bool]:
    """(swatch mean, ring median) in white-balanced linear RGB, and whether the ring is usable."""
    lin = wb_linear(cam, img)
    size = img.shape[0]
    # a ring close to the swatch: shading, vignetting and tone mapping there are the swatch's
    ring = background_region(row, size, RING[0]) & ~background_region(row, size, RING[1])
    enc = img[ring].max(-1)
    usable = bool(np.median(enc) < 245 / 255 and np.median(img[ring].min(-1)) > 3 / 255)
    return lin[swatch_region(row, img.shape[0])].mean(0), np.median(lin[ring], axis=0), usable


def observable_labs(ctx: Context, frame: pd.DataFrame, images: list[np.ndarray]) -> np.ndarray:
    rows = frame.to_dict("records")
    sw, ring, ok = zip(*(_ring(ctx.cameras[_set(ctx, r).camera_id], im, r)
                         for r, im in zip(rows, images)))
    exposure = np.array([r["exposure_time_s"] * r["iso"] / r["f_number"] ** 2 for r in rows])
    per_exp = pd.DataFrame(np.array(ring) / exposure[:, None]).groupby(frame["set_id"].to_numpy())
    session = {k: np.median(g[np.array(ok)[g.index]], axis=0) if np.array(ok)[g.index].any()
               else np.median(g, axis=0) for k, g in per_exp}
    out = np.zeros((len(rows), 3))
    training: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i, r in enumerate(rows):
        ref = ring[i] if ok[i] else session[r["set_id"]] * exposure[i]
        s = int(r["set_id"].removeprefix("set"))
        if s not in training:
            training[s] = _ratio_training(ctx, s)
        z, lab = training[s]
        out[i] = local_linear(z, lab, np.log(np.maximum(sw[i], 1e-9) / np.maximum(ref, 1e-9)))
    return out


def _set(ctx: Context, row: dict):
    return ctx.sets[int(row["set_id"].removeprefix("set"))]


# ------------------------------------------------------------------ entry points
def load_context(card: str | Path) -> tuple[Context, pd.DataFrame, Path]:
    """Rebuild the generator state of a dataset from its card (generated_by block)."""
    card = Path(card)
    if card.is_dir():
        card = card / "dataset.yaml"
    meta = yaml.safe_load(card.read_text())
    gen = {k: v for k, v in meta["generated_by"].items() if k in GeneratorConfig.__dataclass_fields__}
    ctx = build_context(GeneratorConfig(**gen))
    frame = pd.read_csv(card.parent / meta["manifest"])
    return ctx, frame, card.parent


def _result(frame: pd.DataFrame, lab: np.ndarray, prefix: str = "oracle") -> pd.DataFrame:
    res = frame[["sample_id", "camera", "set_id"]].copy()
    res[[f"{prefix}_L", f"{prefix}_a", f"{prefix}_b"]] = lab
    res["de00"] = delta_e00(lab, frame[["target_L", "target_a", "target_b"]].to_numpy())
    return res


def evaluate(card: str | Path, rows=None, progress: bool = False, tier: str = "latents",
             ) -> pd.DataFrame:
    """One tier's Lab (oracle_L/a/b) and dE00 for the photos of a generated dataset (all, or
    the manifest row positions in `rows`); the latents tier by default."""
    return floors(card, rows, progress, tiers=(f"oracle:{tier}",))[f"oracle:{tier}"]


def floors(card: str | Path, rows=None, progress: bool = False,
           tiers: tuple[str, ...] = tuple(f"oracle:{t}" for t in TIERS),
           frame: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Per tier ("oracle:<tier>" -> frame of sample_id, camera, set_id, oracle_L/a/b, de00) for
    the photos of a generated dataset: all of them, the manifest row positions `rows`, or the
    rows of a given `frame` (manifest columns; the truth columns are only used to score).
    KNOWS says what each one knows."""
    ctx, manifest, root = load_context(card)
    frame = manifest if frame is None else frame
    frame = (frame if rows is None else frame.iloc[np.asarray(rows)]).reset_index(drop=True)
    records = frame.to_dict("records")
    images = [load_rgb(root / r["image"]) for r in
              tqdm(records, desc="oracle: reading", unit="photo", disable=not progress)]
    out = {}
    for tier in tiers:
        if tier == "oracle:latents":
            ids = [(int(a[1:]), int(b[1:])) for a, b in (r["sample_id"].split("_") for r in records)]
            lab = np.array([oracle_lab(ctx, s, t, im) for (s, t), im in zip(ids, images)])
        elif tier == "oracle:exif":
            lab = np.array([exif_lab(ctx, r, im) for r, im in zip(records, images)])
        elif tier == "oracle:observable":
            lab = observable_labs(ctx, frame, images)
        else:
            raise KeyError(f"unknown tier {tier!r}; use {[f'oracle:{t}' for t in TIERS]}")
        out[tier] = _result(frame, lab.reshape(-1, 3))
    return out
