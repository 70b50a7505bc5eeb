"""The latent-aware oracle: how well the colour can be read back when everything but sensor noise
and JPEG is known (the lights, the exposure, the white-balance gains, the camera pipeline, the
shading / shadow / vignetting fields and the specular spot).

It inverts the camera (tone curve, matrix, gains, exposure), divides out the illumination field
pixel by pixel, and maps the camera RGB of the swatch under the effective light to D65 Lab with a
local regression over skin spectra drawn from the same prior (not the test tones themselves). It
bounds the learning problem from below: if it could not reach well under 0.5 dE00 the photos would
have lost the information a model is asked to recover.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .context import Context, GeneratorConfig, build_context
from .measure import load_rgb
from .render import K_HEAD, plan
from .skin import reflectance, sample_params
from .spectral import reflectance_to_lab


@lru_cache(maxsize=2)
def _training_skin(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Skin reflectances from the prior (a stream disjoint from the dataset's tones) and their
    D65 Lab: the oracle knows what skin can look like, not which tones were drawn."""
    refl = reflectance(sample_params(6000, np.random.default_rng([seed, 999])))
    return refl, reflectance_to_lab(refl)


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


def _camera_clean(ctx: Context, p, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undo the pipeline: 8-bit sRGB -> the clean raw image at unit exposure (S, S, 3), and a
    mask of pixels that were clipped after white balance (invisible in the output colours)."""
    cam = ctx.cameras[p.spec.camera_id]
    lin = cam.untone(img)
    raw_wb = lin @ (np.linalg.inv(cam.matrix).T * K_HEAD)
    clipped = raw_wb.max(-1) > 0.97 * min(p.gains.min(), 1.0)
    return raw_wb / p.gains / (K_HEAD * 2**p.exposure.error_ev), clipped


def oracle_lab(ctx: Context, set_idx: int, tone_idx: int, img: np.ndarray) -> np.ndarray:
    p = plan(ctx, set_idx, tone_idx)
    f, resp = p.fields, ctx.responses[set_idx]
    clean, clipped = _camera_clean(ctx, p, img)
    import cv2

    core = cv2.erode((f.mask > 0.999).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    if f.specular is not None:
        core &= f.specular < 2e-3
    core &= (img.min(-1) > 2 / 255) & (img.max(-1) < 250 / 255) & ~clipped  # clipped: no signal
    if core.sum() < 20:  # nearly everything clipped: use what is left, however poor
        core = (f.mask > 0.999) & ~clipped if ((f.mask > 0.999) & ~clipped).any() else f.mask > 0.999
    second = f.second if f.second is not None else np.zeros_like(f.primary)
    light_p = (f.optics * f.primary)[core]
    light_q = (f.optics * second)[core]
    rgb = clean[core].sum(0) / (light_p + light_q).sum()
    alpha = light_p.sum() / (light_p + light_q).sum()
    spectrum = alpha * resp.lights[0] + ((1 - alpha) * resp.lights[1] if len(resp.lights) > 1 else 0)
    refl, lab = _training_skin(ctx.seed)
    train = ctx.cameras[p.spec.camera_id].response(spectrum, refl)
    return local_linear(np.log(train), lab, np.log(np.maximum(rgb, 1e-9)))


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


def evaluate(card: str | Path, rows=None, progress: bool = False) -> pd.DataFrame:
    """Oracle Lab and dE00 for the photos of a generated dataset (all, or the manifest row
    positions in `rows`)."""
    from .spectral import delta_e00

    ctx, frame, root = load_context(card)
    frame = frame if rows is None else frame.iloc[np.asarray(rows)]
    out = np.zeros((len(frame), 3))
    from tqdm import tqdm

    records = frame.to_dict("records")
    for i, row in enumerate(tqdm(records, desc="oracle", unit="photo", disable=not progress)):
        s, t = (int(x[1:]) for x in row["sample_id"].split("_"))
        out[i] = oracle_lab(ctx, s, t, load_rgb(root / row["image"]))
    res = frame[["sample_id", "camera", "set_id"]].copy()
    res[["oracle_L", "oracle_a", "oracle_b"]] = out
    res["de00"] = delta_e00(out, frame[["target_L", "target_a", "target_b"]].to_numpy())
    return res

