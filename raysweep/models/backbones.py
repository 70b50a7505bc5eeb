"""Image backbones by name: one interface for our small CNNs and every timm model.

`create_backbone(name)` returns a `Backbone` whose forward gives the list of feature maps (one
per stage, coarsest last) and the pooled features of the last one (a global average of width
`pooled_dim`, unless `set_pool` installs another pooling, e.g. raysweep.models.pooling). FiLM needs to modulate a
stage's output *before* the next stage sees it, so every backbone names its stage modules and a
forward hook applies the (scale, shift) passed to `forward(x, film=...)`; this works unchanged
for timm's `features_only` wrappers, whose stages are ordinary submodules.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from raysweep.errors import UserError, unknown_name

Film = Sequence[tuple[torch.Tensor, torch.Tensor] | None]


class Backbone(nn.Module):
    def __init__(self, body: nn.Module, stages: Sequence[nn.Module | None],
                 channels: Sequence[int]):
        super().__init__()
        self.body = body
        self.channels = list(channels)
        self.num_features = self.channels[-1]  # channels of the last feature map
        self.pool: nn.Module | None = None  # None: global average
        self.pooled_dim = self.num_features
        # Stages a hook can reach; a timm wrapper that hides its stages (ViT getters) has None.
        self.hookable = [stage is not None for stage in stages]
        self._film: Film | None = None
        for i, stage in enumerate(stages):
            if stage is not None:
                stage.register_forward_hook(partial(self._modulate, i))

    def _modulate(self, i: int, module: nn.Module, args, out: torch.Tensor):
        film = self._film
        if film is None or film[i] is None:
            return None  # None keeps the module's output
        scale, shift = film[i]
        return out * (1.0 + scale[:, :, None, None].to(out.dtype)) + shift[:, :, None, None].to(out.dtype)

    def forward(self, x: torch.Tensor, film: Film | None = None):
        """-> (feature maps stage by stage, pooled (B, num_features)).

        `film[i]`, if given, is a (scale, shift) pair of shape (B, channels[i]) applied to stage
        i's output as out * (1 + scale) + shift.
        """
        if film is not None and len(film) != len(self.channels):
            raise ValueError(f"film has {len(film)} entries for {len(self.channels)} stages")
        self._film = film
        try:
            feats = list(self.body(x))
        finally:
            self._film = None
        pooled = feats[-1].mean(dim=(2, 3)) if self.pool is None else self.pool(feats[-1])
        return feats, pooled

    def set_pool(self, pool: nn.Module, pooled_dim: int) -> None:
        self.pool, self.pooled_dim = pool, pooled_dim


class ConvStages(nn.Module):
    """A plain stack of stages returning every stage's output."""

    def __init__(self, stages: Sequence[nn.Module]):
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _convnet(widths: Sequence[int], convs_per_stage: int) -> Backbone:
    stages, cin = [], 3
    for i, w in enumerate(widths):
        layers = _conv_bn(cin, w, stride=1 if i == 0 else 2)  # stage 0 keeps full resolution
        for _ in range(convs_per_stage - 1):
            layers += _conv_bn(w, w)
        stages.append(nn.Sequential(*layers))
        cin = w
    body = ConvStages(stages)
    return Backbone(body, list(body.stages), widths)


def tinycnn(width: int = 32) -> Backbone:
    """Two stages of one conv each: fast enough for unit tests of every combination."""
    return _convnet([max(4, width // 4), max(8, width // 2)], convs_per_stage=1)


def smallcnn(width: int = 32) -> Backbone:
    """Four stages of two 3x3 convs (width, 2w, 4w, 8w), stride 2 from stage 2 on."""
    return _convnet([width, 2 * width, 4 * width, 8 * width], convs_per_stage=2)


REGISTRY: dict[str, Callable[..., Backbone]] = {"tinycnn": tinycnn, "smallcnn": smallcnn}
TIMM_HINT = "any timm model, e.g. resnet18"


def timm_backbone(name: str, weights_path: str = "") -> Backbone:
    import timm

    kwargs: dict = {"pretrained": False, "features_only": True}
    if weights_path:
        if not os.path.isfile(weights_path):
            raise UserError(f"weights file {weights_path!r} does not exist",
                            where=f"weights_path for backbone {name!r}",
                            fix="give the path of a local timm/torch weights file, or leave "
                                "weights_path empty to train from scratch")
        # timm loads a local file through pretrained_cfg_overlay; nothing is downloaded.
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": weights_path})
    body = timm.create_model(name, **kwargs)
    modules = dict(body.named_modules())
    stages = []
    for mod_name in body.feature_info.module_name():
        # FeatureListNet flattens 'stages.0' into 'stages_0'; other wrappers keep the dots.
        stage = modules.get(mod_name) or modules.get(mod_name.replace(".", "_"))
        stages.append(stage)
    return Backbone(body, stages, body.feature_info.channels())


def create_backbone(name: str, width: int = 32, weights_path: str = "") -> Backbone:
    if name in REGISTRY:
        if weights_path:
            raise UserError(f"weights_path is only for timm backbones, not {name!r}",
                            fix="leave weights_path empty or pick a timm backbone")
        return REGISTRY[name](width)
    import timm

    if not timm.is_model(name):
        raise unknown_name("backbone", name, [*REGISTRY, TIMM_HINT], where="TrainConfig.backbone")
    return timm_backbone(name, weights_path)
