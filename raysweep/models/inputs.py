"""Prepared arrays -> model tensors, with normalisation fitted on the training split only.

`FeatureStats` is everything a trained model needs to turn a new `Prepared` into the tensors it
was trained on: metadata, mean-colour and ring mean/std, the image channel statistics of the
linear/log input spaces, the camera vocabulary, the text-embedding settings and the training
target mean (used to start the head near the answer). It travels inside the checkpoint
as a plain JSON dict, so prediction never sees validation or test statistics.

Missing metadata is never a silent zero: each continuous column gets a 0/1 missing flag, and only
after normalisation is the NaN replaced by 0 (the training mean), next to its flag.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from raysweep.config import CORRECTING_HEADS, TrainConfig
from raysweep.data.invariant import describe, invariant_inputs
from raysweep.data.prepared import RING_NAMES, Prepared
from raysweep.errors import UserError

HASH_DIM = 64  # width of the hashed character n-gram vector of the device string
NGRAMS = (2, 3, 4)
SENTENCE_MODEL_ENV = "RAYSWEEP_TEXT_MODEL"  # local sentence-transformers model folder
LOG_EPS = 1e-3  # log input space: log(linear + eps), so black code values stay finite
log = logging.getLogger(__name__)


@dataclass
class FeatureStats:
    meta_names: list[str]
    meta_mean: list[float]
    meta_std: list[float]
    mean_lab_mean: list[float]
    mean_lab_std: list[float]
    target_mean: list[float]
    cameras: list[str]  # vocabulary; index 0 is the unknown bucket, so cameras[i] -> i + 1
    text_embed: str = "none"
    text_dim: int = 0
    text_model: str = ""  # sentence encoder folder when text_embed == "sentence"
    n_train: int = 0
    extra: dict = field(default_factory=dict)
    # Later additions default to empty so that checkpoints written before them still load.
    ring_mean: list[float] = field(default_factory=list)
    ring_std: list[float] = field(default_factory=list)
    image_mean: list[float] = field(default_factory=list)  # per channel, in the input space
    image_std: list[float] = field(default_factory=list)
    inv_mean: list[float] = field(default_factory=list)  # the session-invariant block (inv)
    inv_std: list[float] = field(default_factory=list)

    @property
    def n_meta_inputs(self) -> int:
        return 2 * len(self.meta_names)  # normalised values + missing flags

    @property
    def n_cameras(self) -> int:
        return len(self.cameras) + 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FeatureStats:
        return cls(**d)


def _nan_mean_std(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-column mean and std over non-NaN values; a column with no spread gets std 1."""
    x = np.asarray(x, dtype=np.float64)
    mean, std = [], []
    for col in x.T:
        col = col[np.isfinite(col)]
        m = float(col.mean()) if len(col) else 0.0
        s = float(col.std()) if len(col) > 1 else 0.0
        mean.append(m)
        std.append(s if s > 1e-6 else 1.0)
    return mean, std


def fit_stats(data: Prepared, cfg: TrainConfig) -> FeatureStats:
    """Fit normalisation statistics on the rows of the training split only."""
    train = data.indices("train")
    if len(train) == 0:
        raise UserError("the training split is empty", where=f"dataset {data.info.get('card', '?')}",
                        fix="check the split fractions or the explicit split column")
    meta_mean, meta_std = _nan_mean_std(data.meta[train])
    lab_mean, lab_std = _nan_mean_std(data.mean_lab[train])
    target_mean = np.asarray(data.target[train], dtype=np.float64).mean(0).tolist()
    ring_mean, ring_std = [], []
    if cfg.uses_ring:
        ring_mean, ring_std = _nan_mean_std(ring_inputs(data)[train])
    inv_mean, inv_std = [], []
    if cfg.uses_inv:
        inv_mean, inv_std = _nan_mean_std(invariant_inputs(data)[train])
        if data.ring is None:  # a spreadsheet without ring_* columns: say what is left
            log.warning("features=%s: %s", cfg.features, describe(data))
    image_mean, image_std = [], []
    if cfg.uses_image and data.images is not None and cfg.image_space != "srgb":
        image_mean, image_std = _image_channel_stats(data.images[train], cfg.image_space)
    cameras = sorted({str(c) for c in data.camera[train]})
    text_dim, text_model = 0, ""
    if cfg.text_embed == "hash":
        text_dim = HASH_DIM
    elif cfg.text_embed == "sentence":
        text_model = _sentence_model_path()
        text_dim = int(_sentence_encode(text_model, ["probe"]).shape[1])
    return FeatureStats(
        meta_names=list(data.meta_names), meta_mean=meta_mean, meta_std=meta_std,
        mean_lab_mean=lab_mean, mean_lab_std=lab_std, target_mean=target_mean,
        cameras=cameras, text_embed=cfg.text_embed, text_dim=text_dim, text_model=text_model,
        n_train=int(len(train)), ring_mean=ring_mean, ring_std=ring_std,
        image_mean=image_mean, image_std=image_std, inv_mean=inv_mean, inv_std=inv_std,
    )


def image_lut(space: str) -> np.ndarray:
    """(256,) float32: the value a uint8 sRGB code becomes in the image input space."""
    v = np.arange(256, dtype=np.float64) / 255.0
    if space == "srgb":
        return v.astype(np.float32)
    lin = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    if space == "linear":
        return lin.astype(np.float32)
    if space == "log":
        return np.log(lin + LOG_EPS).astype(np.float32)
    raise ValueError(f"unknown image_space {space!r}")


def _image_channel_stats(images: np.ndarray, space: str) -> tuple[list[float], list[float]]:
    """Exact per-channel mean/std of the transformed training images, from code histograms."""
    lut = image_lut(space).astype(np.float64)
    mean, std = [], []
    for c in range(images.shape[1]):
        hist = np.bincount(images[:, c].ravel(), minlength=256).astype(np.float64)
        p = hist / max(hist.sum(), 1.0)
        m = float(p @ lut)
        s = float(np.sqrt(max(p @ (lut - m) ** 2, 0.0)))
        mean.append(m)
        std.append(s if s > 1e-6 else 1.0)
    return mean, std


def require_ring(data: Prepared) -> np.ndarray:
    if data.ring is None:
        raise UserError(
            "this preset uses the background-ring statistics (ring), but the data has none",
            where=f"dataset {data.info.get('card', '?')}",
            fix=f"prepare the data with a raysweep that computes them (or, in tabular mode, give "
                f"the columns {', '.join(RING_NAMES)}), or pick a preset without ring")
    if data.ring.shape[1:] != (len(RING_NAMES),):
        raise ValueError(f"Prepared.ring must be (N, {len(RING_NAMES)}), got {data.ring.shape}")
    return data.ring


def ring_inputs(data: Prepared) -> np.ndarray:
    """The ring block as the networks see it: log of the linear percentiles (exposure and light
    act multiplicatively, so they become shifts) next to the log patch/ring ratios as they are."""
    ring = require_ring(data).astype(np.float32)
    n_pct = len(RING_NAMES) - 3
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.log(np.maximum(ring[:, :n_pct], 1e-4))
    pct[~np.isfinite(ring[:, :n_pct])] = np.nan  # missing stays missing (flagged), never log(eps)
    return np.concatenate([pct, ring[:, n_pct:]], axis=1)


def input_key(cfg: TrainConfig) -> tuple:
    """What decides which tensors `encode` returns (for caches of encoded datasets)."""
    return (cfg.uses_image, cfg.uses_meta, cfg.uses_mean, cfg.uses_ring, cfg.uses_inv,
            cfg.head in CORRECTING_HEADS)


def _normalise_with_flags(x: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    missing = ~np.isfinite(x)
    z = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    z[missing] = 0.0  # after normalisation: 0 is the training mean, and the flag says why
    return np.concatenate([z, missing.astype(np.float32)], axis=1)


def camera_index(cameras: np.ndarray, stats: FeatureStats) -> np.ndarray:
    vocab = {c: i + 1 for i, c in enumerate(stats.cameras)}
    return np.array([vocab.get(str(c), 0) for c in cameras], dtype=np.int64)


def encode(data: Prepared, stats: FeatureStats, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The model inputs and target of every row, as CPU tensors (images stay uint8).

    Keys: `image` (N,3,S,S) uint8 for image presets; `meta` (N, 2M) and `camera` (N,) and, with
    a text embedding, `text` (N, D) for presets with meta; `mean` (N, 6) normalised mean Lab plus
    missing flags for presets with mean; `ring` (N, 2R) normalised ring statistics plus missing
    flags for presets with ring; `inv` (N, 2K) the session-invariant block
    (raysweep.data.invariant) plus missing flags for presets with inv; `measured` (N, 3) the raw measured patch Lab for the heads that
    correct it (a missing one replaced by the training mean; its flag is in `mean`); always
    `target` (N, 3) Lab.
    """
    out: dict[str, torch.Tensor] = {"target": _tensor(np.asarray(data.target, np.float32))}
    if cfg.uses_image:
        if data.images is None:
            raise UserError(
                f"features={cfg.features!r} needs images, but this dataset has none (tabular mode)",
                where=f"dataset {data.info.get('card', '?')}",
                fix="use a non-image preset: features=mean+meta, meta or mean")
        if data.images.dtype != np.uint8 or data.images.ndim != 4 or data.images.shape[1] != 3:
            raise ValueError(f"Prepared.images must be uint8 (N,3,S,S), got {data.images.dtype} "
                             f"{data.images.shape}")
        out["image"] = _tensor(np.ascontiguousarray(data.images))
    if cfg.uses_meta:
        if list(data.meta_names) != list(stats.meta_names):
            raise UserError(f"metadata columns {list(data.meta_names)} differ from the ones the "
                            f"model was trained with {stats.meta_names}",
                            fix="prepare the data with the same raysweep version as the model")
        out["meta"] = torch.from_numpy(_normalise_with_flags(data.meta, stats.meta_mean,
                                                             stats.meta_std))
        out["camera"] = torch.from_numpy(camera_index(data.camera, stats))
        if stats.text_embed != "none":
            out["text"] = torch.from_numpy(text_features(data.device, stats))
    if cfg.uses_mean:
        out["mean"] = torch.from_numpy(_normalise_with_flags(data.mean_lab, stats.mean_lab_mean,
                                                             stats.mean_lab_std))
    if cfg.uses_ring:
        out["ring"] = torch.from_numpy(_normalise_with_flags(ring_inputs(data), stats.ring_mean,
                                                             stats.ring_std))
    if cfg.uses_inv:
        out["inv"] = torch.from_numpy(_normalise_with_flags(invariant_inputs(data),
                                                            stats.inv_mean, stats.inv_std))
    if cfg.head in CORRECTING_HEADS:
        measured = np.array(data.mean_lab, dtype=np.float32)
        gap = ~np.isfinite(measured).all(axis=1)
        measured[gap] = np.asarray(stats.mean_lab_mean, np.float32)
        out["measured"] = torch.from_numpy(measured)
    return out


def _tensor(arr: np.ndarray) -> torch.Tensor:
    """Zero-copy tensor, also of the read-only arrays that ray.get maps from the object store
    (nothing here writes to them; torch would warn about it once per process)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(arr)


# ---- text embedding of the device string ------------------------------------------------------

def hash_ngrams(texts, dim: int = HASH_DIM, ngrams: tuple[int, ...] = NGRAMS) -> np.ndarray:
    """Signed hashed character n-grams, L2-normalised: similar model names share n-grams.

    blake2b, not Python's hash(), so that the vector of a string is the same in every process.
    """
    cache: dict[str, np.ndarray] = {}
    out = np.zeros((len(texts), dim), np.float32)
    for row, text in enumerate(texts):
        key = str(text)
        if key not in cache:
            vec = np.zeros(dim, np.float32)
            s = f" {key.lower().strip()} "
            for n in ngrams:
                for i in range(max(len(s) - n + 1, 0)):
                    h = int.from_bytes(hashlib.blake2b(s[i:i + n].encode(), digest_size=8).digest(),
                                       "little")
                    vec[h % dim] += 1.0 if (h >> 63) & 1 else -1.0
            norm = np.linalg.norm(vec)
            cache[key] = vec / norm if norm > 0 else vec
        out[row] = cache[key]
    return out


def text_features(texts: np.ndarray, stats: FeatureStats) -> np.ndarray:
    if stats.text_embed == "hash":
        return hash_ngrams(texts, stats.text_dim)
    if stats.text_embed == "sentence":
        uniq, inverse = np.unique(np.asarray(texts).astype(str), return_inverse=True)
        return _sentence_encode(stats.text_model, list(uniq))[inverse]
    raise ValueError(f"no text embedding for text_embed={stats.text_embed!r}")


def _sentence_model_path() -> str:
    path = os.environ.get(SENTENCE_MODEL_ENV, "")
    if not path or not os.path.isdir(path):
        raise UserError(
            "text_embed=sentence needs a locally installed sentence-transformers model",
            where=f"environment variable {SENTENCE_MODEL_ENV}={path!r}",
            fix=f"set {SENTENCE_MODEL_ENV} to the folder of a downloaded model (nothing is "
                "downloaded at run time), or use text_embed=hash")
    return path


def _sentence_encode(path: str, texts: list[str]) -> np.ndarray:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UserError("text_embed=sentence needs the sentence_transformers package",
                        fix="pip install sentence-transformers, or use text_embed=hash") from None
    model = SentenceTransformer(path, device="cpu")
    return np.asarray(model.encode(texts, convert_to_numpy=True, normalize_embeddings=True),
                      dtype=np.float32)
