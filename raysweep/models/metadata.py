"""The non-image inputs -> one conditioning vector: metadata, camera, device text, mean Lab, ring.

Which inputs exist follows the feature preset: `meta` brings the continuous EXIF columns with
their missing flags, the camera embedding and (optionally) the device-string embedding; `mean`
brings the patch mean Lab with its missing flags; `ring` the background-ring statistics (the
light reference around the patch) with theirs; `inv` the session-invariant ratios
(raysweep.data.invariant) with theirs. Everything goes through one small MLP so that
the fusions downstream see a single `out_dim`-wide vector.
"""

from __future__ import annotations

import torch
from torch import nn

from raysweep.config import TrainConfig
from raysweep.data.invariant import INV_NAMES
from raysweep.data.prepared import RING_NAMES
from raysweep.errors import UserError
from raysweep.models.inputs import FeatureStats

TEXT_PROJ = 16  # the device-string embedding is squeezed to this before the MLP
CAMERA_DROPOUT = 0.1  # share of training rows shown as "unknown camera" so bucket 0 is trained


class ConditionEncoder(nn.Module):
    def __init__(self, cfg: TrainConfig, stats: FeatureStats):
        super().__init__()
        self.uses_meta, self.uses_mean, self.uses_ring = cfg.uses_meta, cfg.uses_mean, cfg.uses_ring
        self.uses_inv = cfg.uses_inv
        n_in = 0
        if self.uses_meta:
            n_in += stats.n_meta_inputs
            # Index 0 is the unknown-camera bucket (features.camera_index).
            self.camera = nn.Embedding(stats.n_cameras, cfg.camera_embed_dim)
            n_in += cfg.camera_embed_dim
            self.text = None
            if stats.text_embed != "none":
                self.text = nn.Linear(stats.text_dim, TEXT_PROJ)
                n_in += TEXT_PROJ
        if self.uses_mean:
            n_in += 6  # normalised L, a, b and their missing flags
        if self.uses_ring:
            n_in += 2 * len(RING_NAMES)  # normalised statistics and their missing flags
        if self.uses_inv:
            if len(stats.inv_mean) != len(INV_NAMES):
                # a checkpoint from before the block lost its exposure column (4 columns, now 3)
                raise UserError(
                    f"this model was trained on {len(stats.inv_mean)} session-invariant (inv) "
                    f"columns, this raysweep computes {len(INV_NAMES)} ({', '.join(INV_NAMES)})",
                    where="the model's checkpoint", fix="retrain it with this raysweep version")
            n_in += 2 * len(INV_NAMES)
        self.n_in = n_in
        self.out_dim = cfg.meta_hidden
        self.mlp = nn.Sequential(
            nn.Linear(n_in, cfg.meta_hidden), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.meta_hidden, cfg.meta_hidden), nn.GELU(),
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if self.uses_meta:
            camera = batch["camera"]
            if self.training:
                camera = torch.where(torch.rand(camera.shape, device=camera.device) < CAMERA_DROPOUT,
                                     torch.zeros_like(camera), camera)
            parts += [batch["meta"], self.camera(camera)]
            if self.text is not None:
                parts.append(self.text(batch["text"]))
        if self.uses_mean:
            parts.append(batch["mean"])
        if self.uses_ring:
            parts.append(batch["ring"])
        if self.uses_inv:
            parts.append(batch["inv"])
        return self.mlp(torch.cat(parts, dim=1))
