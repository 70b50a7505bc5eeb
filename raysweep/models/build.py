"""`build_model(cfg, stats)`: every combination the study compares, by name.

The model takes the batch dict of `raysweep.models.inputs.encode` (images as uint8; the
conversion to the input colour space `image_space` (a 256-entry lookup table) and the
normalisation happen here, on whatever device the batch lives on) and returns CIELAB (B, 3).
"""

from __future__ import annotations

import torch
from torch import nn

from raysweep.config import TrainConfig
from raysweep.models import pooling
from raysweep.models.backbones import create_backbone
from raysweep.models.fusion import create_fusion
from raysweep.models.heads import create_head
from raysweep.models.inputs import FeatureStats, image_lut
from raysweep.models.metadata import ConditionEncoder

# ImageNet statistics: what timm weights expect; harmless for models trained from scratch.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


class ColorModel(nn.Module):
    def __init__(self, cfg: TrainConfig, stats: FeatureStats):
        super().__init__()
        self.uses_image = cfg.uses_image
        backbone = None
        if self.uses_image:
            backbone = create_backbone(cfg.backbone, cfg.width, cfg.weights_path)
            pooling.install(backbone, cfg)
        needs_cond = cfg.uses_cond and (not self.uses_image or cfg.fusion != "none")
        self.encoder = ConditionEncoder(cfg, stats) if needs_cond else None
        cond_dim = self.encoder.out_dim if self.encoder is not None else 0
        self.fusion = create_fusion(cfg, backbone, cond_dim)
        self.head = create_head(cfg.head, self.fusion.out_dim, max(cfg.meta_hidden, 64), cfg.dropout,
                                torch.tensor(stats.target_mean, dtype=torch.float32),
                                torch.tensor(stats.mean_lab_mean, dtype=torch.float32))
        # sRGB keeps the ImageNet statistics timm weights expect; linear and log light use the
        # training images' own channel statistics (FeatureStats), as no weights expect those.
        fitted = cfg.image_space != "srgb" and stats.image_mean
        mean = stats.image_mean if fitted else IMAGE_MEAN
        std = stats.image_std if fitted else IMAGE_STD
        self.register_buffer("image_lut", torch.from_numpy(image_lut(cfg.image_space)),
                             persistent=False)
        self.register_buffer("image_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.channels_last = False  # set by the training loop on CUDA

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = None
        if self.uses_image:
            x = (self.image_lut[batch["image"].long()] - self.image_mean) / self.image_std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        cond = self.encoder(batch) if self.encoder is not None else None
        return self.head(self.fusion(x, cond), batch)


def build_model(cfg: TrainConfig, stats: FeatureStats) -> ColorModel:
    return ColorModel(cfg, stats)
