"""How the image and the conditioning vector meet: none, concat, film, xattn, and tabular.

Each fusion owns the backbone (if any) and maps (image, cond) -> one feature vector of width
`out_dim` for the head.

- `none`: the image alone (metadata and mean are ignored even if the preset has them; this is
  the image-only arm of a fusion study).
- `concat`: late fusion, pooled image features next to the conditioning vector.
- `film`: the conditioning vector scales and shifts every channel of the last `film_stages`
  stages (Perez et al. 2018); the generators start at zero, so training starts from the plain
  image model.
- `xattn`: a few metadata tokens attend (multi-head) to the spatial tokens of the last stage; the
  attended tokens join the pooled features.
- `tabular`: no image; the conditioning MLP's output goes straight to the head.
"""

from __future__ import annotations

import torch
from torch import nn

from raysweep.config import TrainConfig
from raysweep.errors import UserError, unknown_name
from raysweep.models.backbones import Backbone

XATTN_TOKENS = 4  # metadata tokens (queries) in cross-attention


class NoFusion(nn.Module):
    def __init__(self, backbone: Backbone, cond_dim: int, cfg: TrainConfig):
        super().__init__()
        self.backbone = backbone
        self.out_dim = backbone.pooled_dim
        self.uses_cond = False

    def forward(self, x, cond):
        return self.backbone(x)[1]


class Concat(nn.Module):
    def __init__(self, backbone: Backbone, cond_dim: int, cfg: TrainConfig):
        super().__init__()
        self.backbone = backbone
        self.out_dim = backbone.pooled_dim + cond_dim
        self.uses_cond = cond_dim > 0

    def forward(self, x, cond):
        pooled = self.backbone(x)[1]
        return pooled if cond is None else torch.cat((pooled, cond.to(pooled.dtype)), dim=1)


class Film(nn.Module):
    def __init__(self, backbone: Backbone, cond_dim: int, cfg: TrainConfig):
        super().__init__()
        self.backbone = backbone
        n = len(backbone.channels)
        if cfg.film_stages < 1:
            raise UserError("fusion=film with film_stages=0 modulates nothing",
                            where="TrainConfig.film_stages", fix="set film_stages >= 1")
        self.stage_ids = list(range(max(0, n - cfg.film_stages), n))
        if not all(backbone.hookable[i] for i in self.stage_ids):
            raise UserError(f"backbone {cfg.backbone!r} does not expose the stages FiLM modulates",
                            where="TrainConfig.backbone", fix="use fusion=concat or xattn, or a "
                            "convolutional backbone (smallcnn, resnet18, efficientnet_b0, ...)")
        self.gen = nn.ModuleList(nn.Linear(cond_dim, 2 * backbone.channels[i]) for i in self.stage_ids)
        for lin in self.gen:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.out_dim = backbone.pooled_dim
        self.uses_cond = True

    def forward(self, x, cond):
        film: list = [None] * len(self.backbone.channels)
        for gen, i in zip(self.gen, self.stage_ids):
            film[i] = gen(cond).chunk(2, dim=1)
        return self.backbone(x, film=film)[1]


def sincos_2d(h: int, w: int, dim: int, device, dtype) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes (HW, dim); size-free, so any image size works."""
    n = max(dim // 4, 1)
    omega = 1.0 / (10000 ** (torch.arange(n, device=device, dtype=torch.float32) / n))
    y, x = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                          torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    y, x = y.reshape(-1, 1) * omega, x.reshape(-1, 1) * omega
    pos = torch.cat((y.sin(), y.cos(), x.sin(), x.cos()), dim=1)[:, :dim]
    if pos.shape[1] < dim:
        pos = torch.nn.functional.pad(pos, (0, dim - pos.shape[1]))
    return pos.to(dtype)


class XAttn(nn.Module):
    def __init__(self, backbone: Backbone, cond_dim: int, cfg: TrainConfig):
        super().__init__()
        d, heads = cfg.xattn_dim, cfg.xattn_heads
        if d % heads:
            raise UserError(f"xattn_dim={d} is not divisible by xattn_heads={heads}",
                            where="TrainConfig", fix="pick xattn_dim as a multiple of xattn_heads")
        self.backbone, self.d = backbone, d
        self.img_proj = nn.Conv2d(backbone.num_features, d, 1)
        self.query = nn.Linear(cond_dim, XATTN_TOKENS * d)
        self.norm_q, self.norm_kv = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=cfg.dropout, batch_first=True)
        self.ff = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.out_dim = backbone.pooled_dim + XATTN_TOKENS * d
        self.uses_cond = True

    def forward(self, x, cond):
        feats, pooled = self.backbone(x)
        tokens = self.img_proj(feats[-1])  # (B, d, H, W)
        b, d, h, w = tokens.shape
        tokens = tokens.flatten(2).transpose(1, 2) + sincos_2d(h, w, d, tokens.device, tokens.dtype)
        kv = self.norm_kv(tokens)
        q = self.query(cond).view(b, XATTN_TOKENS, d).to(kv.dtype)
        q = q + self.attn(self.norm_q(q), kv, kv, need_weights=False)[0]
        q = q + self.ff(q)
        return torch.cat((pooled, q.flatten(1).to(pooled.dtype)), dim=1)


class Tabular(nn.Module):
    """Non-image presets: the conditioning MLP is the model; the head adds one more layer."""

    def __init__(self, backbone: None, cond_dim: int, cfg: TrainConfig):
        super().__init__()
        self.out_dim = cond_dim
        self.uses_cond = True

    def forward(self, x, cond):
        return cond


FUSION_CLASSES = {"none": NoFusion, "concat": Concat, "film": Film, "xattn": XAttn}


def create_fusion(cfg: TrainConfig, backbone: Backbone | None, cond_dim: int) -> nn.Module:
    if backbone is None:
        return Tabular(None, cond_dim, cfg)
    if cfg.fusion not in FUSION_CLASSES:
        raise unknown_name("fusion", cfg.fusion, FUSION_CLASSES, where="TrainConfig.fusion")
    return FUSION_CLASSES[cfg.fusion](backbone, cond_dim, cfg)

