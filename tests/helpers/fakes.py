"""Tiny in-memory datasets for tests: a `Prepared` whose target is a known function of the input.

`make_prepared` builds photos of flat colour patches taken with an exposure error: each photo's
pixels are the true sRGB colour scaled by 2**(exposure_bias_ev / 2) plus noise, and the target is
the true colour's CIELAB. A model that reads the image mean and the exposure bias can therefore
learn the target almost exactly; one that reads only the image cannot fully. Deterministic in
`seed`; every split is non-empty and splits are grouped by tone (two photos per tone).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import torch

from raysweep.color import srgb_to_lab
from raysweep.data.prepared import META_NAMES, Prepared

CAMERAS = ("cam_a", "cam_b", "cam_c")
DEVICES = {"cam_a": "Apple iPhone 12", "cam_b": "Google Pixel 7", "cam_c": "Samsung SM-G991B"}


def _lab(rgb: np.ndarray) -> np.ndarray:
    return srgb_to_lab(torch.as_tensor(rgb, dtype=torch.float64)).numpy().astype(np.float32)


def make_prepared(n: int = 48, size: int = 16, tabular: bool = False, seed: int = 0,
                  missing_rate: float = 0.1, crop: str = "adaptive_bg") -> Prepared:
    """A `Prepared` with `n` rows (n >= 10), `size` px images (None when `tabular`)."""
    if n < 10:
        raise ValueError("make_prepared needs n >= 10 so that every split has rows")
    rng = np.random.default_rng(seed)
    true_rgb = rng.uniform(0.25, 0.8, size=(n, 3))
    bias = rng.uniform(-1.0, 1.0, size=n)
    shown = np.clip(true_rgb * 2.0 ** (bias[:, None] / 2.0), 0.0, 1.0)

    meta = np.stack([
        rng.uniform(6, 10, n),  # log2_iso
        rng.uniform(-10, -4, n),  # log2_exposure_s
        rng.uniform(-2, 8, n),  # brightness_ev
        bias,  # exposure_bias_ev: the one column that explains the target
        rng.uniform(1.8, 2.4, n),  # f_number
    ], axis=1).astype(np.float32)
    holes = rng.random(meta.shape) < missing_rate
    holes[:, 3] &= rng.random(n) < 0.3  # fewer holes in the informative column
    meta[holes] = np.nan

    images = None
    if not tabular:
        yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
        shading = 1.0 + 0.04 * (xx - 0.5) + 0.03 * (yy - 0.5)  # mild, colour-neutral gradient
        pix = shown[:, :, None, None] * shading[None, None] + rng.normal(0, 0.02, (n, 3, size, size))
        images = np.clip(np.round(pix * 255), 0, 255).astype(np.uint8)
        mean_rgb = images.reshape(n, 3, -1).mean(-1) / 255.0
    else:
        mean_rgb = np.clip(shown + rng.normal(0, 0.005, shown.shape), 0, 1)
    mean_lab = _lab(mean_rgb)
    if missing_rate > 0:
        mean_lab[rng.random(n) < missing_rate / 2] = np.nan
    target = _lab(true_rgb)

    tone_id = np.arange(n) // 2
    tones = np.unique(tone_id)
    order = rng.permutation(len(tones))
    n_val = n_test = max(1, round(0.2 * len(tones)))
    tone_split = np.empty(len(tones), dtype=object)
    tone_split[order[:n_val]] = "val"
    tone_split[order[n_val:n_val + n_test]] = "test"
    tone_split[order[n_val + n_test:]] = "train"
    split = tone_split[tone_id].astype(str)

    set_id = np.arange(n) % 6
    camera = np.array([CAMERAS[s % len(CAMERAS)] for s in set_id])
    device = np.array([DEVICES[c] for c in camera])
    sample_id = np.array([f"s{seed}_{i:05d}" for i in range(n)])
    frame = pd.DataFrame({
        "sample_id": sample_id, "image": "", "tone_id": tone_id, "set_id": set_id,
        "camera": camera, "split": split,
        **{f"target_{c}": target[:, i] for i, c in enumerate("Lab")},
        **{name: meta[:, i] for i, name in enumerate(META_NAMES)},
    })
    digest = hashlib.sha256()
    for arr in (target, meta, mean_lab, images if images is not None else np.zeros(0)):
        digest.update(np.ascontiguousarray(arr).tobytes())
    content_hash = digest.hexdigest()[:16]
    split_id = hashlib.sha256("".join(split).encode()).hexdigest()[:12]
    # A grey surround photographed with the same exposure: log(patch / ring) recovers the true
    # colour up to a constant, as a neutral background does in a real photo.
    ring_p50 = np.repeat((0.5 * 2.0 ** (bias / 2.0))[:, None], 3, axis=1)
    patch = np.clip(shown, 1e-4, 1.0)
    ring = np.concatenate([0.9 * ring_p50, ring_p50, 1.1 * ring_p50,
                           np.log(patch / ring_p50)], axis=1).astype(np.float32)
    return Prepared(
        sample_id=sample_id, images=images, mean_lab=mean_lab, meta=meta, camera=camera,
        device=device, target=target, split=split, frame=frame, ring=ring,
        info={"content_hash": content_hash, "split_file": "", "split_id": split_id,
              "crop": None if tabular else crop, "size": None if tabular else size,
              "card": f"<fake seed={seed}>"},
    )
