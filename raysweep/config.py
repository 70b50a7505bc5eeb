"""Training settings: one flat, validated dataclass.

Flat on purpose: a search space returns a flat dict of constants, `--set key=value` addresses a
field by name, and MLflow params are flat. Unknown keys and bad values fail loudly at submit time,
before any Ray process starts, and the message lists what is valid.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from typing import Any

from raysweep.errors import UserError, unknown_name

CROPS = ("center_bg", "center_nobg", "adaptive_bg", "adaptive_nobg")
FUSIONS = ("none", "concat", "film", "xattn")
# A preset is a "+"-joined set of input blocks, always written in this order: the image, the
# measured patch mean colour, the background-ring statistics, the session-invariant ratios
# (raysweep/data/invariant.py: patch over ring, exposure-normalised brightness), the camera
# metadata.
FEATURE_BLOCKS = ("image", "mean", "ring", "inv", "meta")
FEATURES = tuple("+".join(b for i, b in enumerate(FEATURE_BLOCKS) if mask >> i & 1)
                 for mask in range(1, 2 ** len(FEATURE_BLOCKS)))
IMAGE_FEATURES = tuple(f for f in FEATURES if f.startswith("image"))
# lab / linrgb predict the colour; ccm / residual correct the measured patch colour (needs `mean`).
HEADS = ("lab", "linrgb", "ccm", "residual")
CORRECTING_HEADS = ("ccm", "residual")
IMAGE_SPACES = ("srgb", "linear", "log")  # what the CNN sees: sRGB code values or linear light
POOLINGS = ("avg", "patch_surround")  # one global average, or patch and surround apart
OPTIMIZERS = ("adamw", "sgd")
AUX_LOSSES = ("none", "mse_lab", "huber_lab", "mse_linrgb", "huber_linrgb")
AUX_SCHEDULES = ("constant", "linear_decay", "cosine_decay")
REDUCTIONS = ("mean", "median")
TEXT_EMBEDS = ("none", "hash", "sentence")
SPLIT_BY = ("tone_id", "set_id", "camera", "column")
# Backbones built at `width` (raysweep.models.backbones.REGISTRY); a timm model has its own.
WIDTH_BACKBONES = ("tinycnn", "smallcnn")
# What only an image model reads: a preset without `image` is the tabular MLP.
IMAGE_ONLY = ("backbone", "width", "crop", "image_size", "image_space", "pooling", "augment",
              "weights_path", "film_stages", "xattn_heads", "xattn_dim")
# What "best" means everywhere: the checkpoint a trial keeps (train.loop), Optuna, ASHA and the
# leaderboard (sweep), the leaders eval_winners re-scores (evaluate.trials). One metric, not a
# setting of a space, so no two parts can disagree on which checkpoint or trial won.
SELECT_METRIC, SELECT_MODE = "val_de00_mean", "min"
# The key of the last result a Tune trial reports when its weights diverged (non-finite loss or
# predictions), with the reason as its value. The trial ends instead of raising: Tune would
# retry an error from the last checkpoint, where the same seeds diverge again. Whatever lists
# trials (leaderboard, MLflow run, console) counts such a trial as FAILED.
DIVERGED = "diverged"


@dataclass
class TrainConfig:
    # model
    backbone: str = "smallcnn"
    fusion: str = "concat"
    features: str = "image+meta"
    crop: str = "adaptive_bg"
    image_size: int = 64
    width: int = 32  # channel width of smallcnn/tinycnn; ignored by timm backbones
    film_stages: int = 2  # last N feature stages modulated by FiLM
    xattn_heads: int = 4
    xattn_dim: int = 64
    meta_hidden: int = 64
    camera_embed_dim: int = 8
    text_embed: str = "none"
    dropout: float = 0.1
    head: str = "lab"
    image_space: str = "srgb"
    pooling: str = "avg"
    weights_path: str = ""  # local timm weights file; never downloaded
    # optimisation
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    epochs: int = 10
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    augment: bool = True
    # loss
    de00_weight: float = 1.0
    aux_loss: str = "mse_lab"
    aux_weight: float = 0.1
    aux_schedule: str = "linear_decay"
    reduction: str = "mean"
    # data
    split_by: str = "tone_id"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    # runtime
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = True  # autocast on CUDA only; CPU always runs float32

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "training config") -> TrainConfig:
        valid = cls.field_names()
        for key in d:
            if key not in valid:
                raise unknown_name("parameter", key, valid, where=where)
        typed = {k: coerce(k, v, where) for k, v in d.items()}
        cfg = cls(**typed)
        cfg.validate(where)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    @property
    def uses_image(self) -> bool:
        return self.features.startswith("image")

    @property
    def uses_meta(self) -> bool:
        return "meta" in self.features.split("+")

    @property
    def uses_mean(self) -> bool:
        return "mean" in self.features.split("+")

    @property
    def uses_ring(self) -> bool:
        return "ring" in self.features.split("+")

    @property
    def uses_inv(self) -> bool:
        return "inv" in self.features.split("+")

    @property
    def uses_cond(self) -> bool:
        """Whether the preset has any non-image input to condition on."""
        return self.uses_meta or self.uses_mean or self.uses_ring or self.uses_inv

    def validate(self, where: str = "training config") -> None:
        choices = {
            "fusion": FUSIONS, "features": FEATURES, "crop": CROPS, "head": HEADS,
            "optimizer": OPTIMIZERS, "aux_loss": AUX_LOSSES, "aux_schedule": AUX_SCHEDULES,
            "reduction": REDUCTIONS, "text_embed": TEXT_EMBEDS, "split_by": SPLIT_BY,
            "device": ("auto", "cpu", "cuda"), "image_space": IMAGE_SPACES,
            "pooling": POOLINGS,
        }
        for name, options in choices.items():
            value = getattr(self, name)
            if value not in options:
                raise unknown_name(name, value, options, where=where)
        positive = ["lr", "batch_size", "epochs", "image_size", "width", "meta_hidden",
                    "xattn_heads", "xattn_dim", "camera_embed_dim"]
        for name in positive:
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise UserError(f"{name} must be positive, got {value!r}", where=where,
                                fix=f"set {name} to a value > 0")
        non_negative = ["weight_decay", "warmup_epochs", "grad_clip", "de00_weight",
                        "aux_weight", "dropout", "film_stages"]
        for name in non_negative:
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise UserError(f"{name} must be >= 0, got {value!r}", where=where,
                                fix=f"set {name} to a value >= 0")
        if self.dropout >= 1:
            raise UserError(f"dropout must be < 1, got {self.dropout}", where=where)
        if not 0 <= self.val_fraction < 1 or not 0 <= self.test_fraction < 1 or \
                self.val_fraction + self.test_fraction >= 1:
            raise UserError("val_fraction and test_fraction must be in [0, 1) and sum below 1",
                            where=where)
        if self.de00_weight == 0 and (self.aux_loss == "none" or self.aux_weight == 0):
            raise UserError("the loss has no term: de00_weight is 0 and no auxiliary loss",
                            where=where, fix="set de00_weight > 0 or choose an aux_loss")
        if not self.uses_image and self.fusion not in ("none", "concat"):
            # Non-image presets use the tabular MLP; a fusion name there would be silently ignored.
            raise UserError(f"features={self.features!r} has no image, so fusion={self.fusion!r}"
                            " cannot apply", where=where,
                            fix="use fusion=none (the tabular MLP) for non-image presets")
        if self.head in CORRECTING_HEADS and not self.uses_mean:
            raise UserError(f"head={self.head!r} corrects the measured patch colour, but "
                            f"features={self.features!r} has no mean block", where=where,
                            fix="add mean to features (e.g. mean+ring+meta) or use head=lab")
        if self.pooling == "patch_surround" and (not self.uses_image or
                                                 self.crop.endswith("_nobg")):
            raise UserError(f"pooling=patch_surround needs an image crop with background, not "
                            f"features={self.features!r}, crop={self.crop!r}", where=where,
                            fix="use a *_bg crop with an image preset, or pooling=avg")
        if self.uses_image and self.fusion in ("film", "xattn") and not self.uses_cond:
            raise UserError(f"fusion={self.fusion!r} needs a non-image input to condition on, but "
                            f"features={self.features!r}", where=where,
                            fix="add meta or mean to features, or use fusion=none")


def ignored_fields(cfg: TrainConfig) -> dict[str, str]:
    """The fields that `cfg`'s model and loss never read, each with why. A space that searches
    one of them spends trials on a setting that changes nothing; raysweep.sweep.spaces refuses it."""
    why: dict[str, str] = {}
    if not cfg.uses_image:
        why.update(dict.fromkeys(IMAGE_ONLY, f"features={cfg.features!r} has no image (the "
                                             "tabular MLP)"))
    else:
        if cfg.fusion != "film":
            why["film_stages"] = f"fusion={cfg.fusion!r}, not film"
        if cfg.fusion != "xattn":
            why.update(dict.fromkeys(("xattn_heads", "xattn_dim"), f"fusion={cfg.fusion!r}, not xattn"))
        if cfg.backbone not in WIDTH_BACKBONES:
            why["width"] = f"backbone={cfg.backbone!r} is a timm model with its own width"
    if not cfg.uses_meta or (cfg.uses_image and cfg.fusion == "none"):
        why.update(dict.fromkeys(("camera_embed_dim", "text_embed"), "no metadata reaches the model"
                                 f" (features={cfg.features!r}, fusion={cfg.fusion!r})"))
    if cfg.aux_loss == "none":
        why.update(dict.fromkeys(("aux_weight", "aux_schedule"), "aux_loss='none'"))
    return why


def coerce(key: str, value: Any, where: str = "training config") -> Any:
    """Convert a value (e.g. the string from `--set lr=3e-4`) to the field's type."""
    types = {f.name: f.type for f in fields(TrainConfig)}
    kind = types[key]
    try:
        if kind == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return low in ("true", "1", "yes")
            return bool(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{key}={value!r} is not a valid {kind}", where=where) from None
