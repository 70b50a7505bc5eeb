"""The heads that correct the measured colour (ccm, residual) and the new input options learn.

A known colour cast (per-camera channel gains and an exposure error from EXIF) is undone by the
ccm head; every new option (ring block, linear/log input, patch/surround pooling, ccm, residual)
lowers the training loss on tiny data; a model with all of them survives its checkpoint.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raysweep import color
from raysweep.color import delta_e00
from raysweep.config import TrainConfig
from raysweep.errors import UserError
from raysweep.models import build_model
from raysweep.models.heads import CCMHead, ResidualHead
from raysweep.models.inputs import encode, fit_stats
from raysweep.train import checkpoint, predictor
from raysweep.train.loop import fit
from tests.helpers.fakes import make_prepared

CAST = {"cam_a": (1.35, 1.0, 0.7), "cam_b": (0.8, 1.0, 1.3), "cam_c": (1.1, 0.95, 1.0)}


def colour_cast_data(n: int = 180, seed: int = 0):
    """Tabular rows whose measured colour is the truth under a per-camera cast and an exposure
    error (exposure_bias_ev, given in the metadata): lin_measured = gain * 2**(bias/2) * lin."""
    data = make_prepared(n=n, tabular=True, seed=seed, missing_rate=0.0)
    lin = color.lab_to_linear_srgb(torch.from_numpy(data.target).double())
    gain = torch.tensor([CAST[c] for c in data.camera], dtype=torch.float64)
    bias = torch.from_numpy(data.meta[:, 3]).double()
    shown = lin * gain * (2.0 ** (bias / 2.0))[:, None]
    data.mean_lab = color.linear_srgb_to_lab(shown).float().numpy()
    return data


def _val_de(pred: torch.Tensor, data, split: str = "val") -> float:
    idx = data.indices(split)
    return float(delta_e00(pred[idx], torch.from_numpy(data.target[idx])).mean())


def test_ccm_head_corrects_a_known_colour_cast():
    data = colour_cast_data()
    naive = _val_de(torch.from_numpy(data.mean_lab), data)
    assert naive > 5.0  # the cast is large
    cfg = TrainConfig(features="mean+meta", fusion="none", head="ccm", epochs=150, batch_size=32,
                      lr=3e-3, dropout=0.0, aux_loss="none", warmup_epochs=1, seed=0)
    result = fit(cfg, data)
    assert result.best["val_de00_mean"] < min(1.5, 0.2 * naive), (naive, result.best)
    # The learned matrix of a cam_a photo at zero exposure bias undoes cam_a's gains.
    model = result.model.eval()
    stats = fit_stats(data, cfg)
    batch = encode(data, stats, cfg)
    row = int(np.argmin(np.abs(data.meta[:, 3]) + 10 * (data.camera != "cam_a")))
    with torch.no_grad():
        m, _ = model.head.matrix(model.fusion(None, model.encoder({k: v[row:row + 1]
                                                                  for k, v in batch.items()})))
    wanted = torch.diag(1.0 / torch.tensor(CAST["cam_a"]) / 2.0 ** (data.meta[row, 3] / 2.0))
    assert torch.allclose(m[0], wanted.float(), atol=0.15), m[0]


def test_correcting_heads_start_at_the_measured_colour():
    measured = torch.tensor([[55.0, 12.0, 18.0], [40.0, 15.0, 25.0]])
    batch = {"measured": measured}
    ccm = CCMHead(8, 16, 0.0, torch.zeros(3))
    res = ResidualHead(8, 16, 0.0, torch.tensor([57.0, 12.0, 18.0]), torch.tensor([55.0, 12.0, 18.0]))
    with torch.no_grad():
        x = torch.randn(2, 8)  # the small last layer keeps any input near the output bias
        assert torch.allclose(ccm(x, batch), measured, atol=1.0)
        assert torch.allclose(res(x, batch), measured + torch.tensor([2.0, 0.0, 0.0]), atol=1.0)


def test_correcting_heads_need_the_mean_block():
    with pytest.raises(UserError, match="mean"):
        TrainConfig(features="ring+meta", fusion="none", head="ccm").validate()
    with pytest.raises(UserError, match="background"):
        TrainConfig(features="image+meta", crop="adaptive_nobg", pooling="patch_surround").validate()


OPTIONS = {
    "ring block": dict(features="image+mean+ring+meta"),
    "linear input": dict(image_space="linear"),
    "log input": dict(image_space="log"),
    "patch/surround pooling": dict(pooling="patch_surround"),
    "ccm head": dict(head="ccm"),
    "residual head": dict(head="residual"),
    "tabular ring + ccm": dict(features="mean+ring+meta", fusion="none", head="ccm"),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_new_option_learns(name):
    data = make_prepared(n=64, size=16, seed=0)
    base = dict(backbone="tinycnn", fusion="concat", features="image+mean+meta", image_size=16,
                width=16, epochs=6, batch_size=16, lr=3e-3, warmup_epochs=0.5, dropout=0.0)
    result = fit(TrainConfig(**{**base, **OPTIONS[name]}), data)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.8 * losses[0], losses


def test_model_with_every_new_option_survives_its_checkpoint(tmp_path):
    data = make_prepared(n=48, size=16, seed=4)
    cfg = TrainConfig(backbone="tinycnn", fusion="film", features="image+mean+ring+meta",
                      image_size=16, width=16, epochs=2, batch_size=16, head="ccm",
                      image_space="log", pooling="patch_surround")
    result = fit(cfg, data, checkpoint_dir=str(tmp_path / "best"))
    stats = fit_stats(data, cfg)
    checkpoint.save(tmp_path / "final", result.model, cfg, stats, data.info, 2, {})
    direct = predictor.predict_batch(result.model, encode(data, stats, cfg),
                                     torch.arange(len(data)))
    loaded = predictor.load(tmp_path / "final", device="cpu")
    assert loaded.cfg.head == "ccm" and loaded.stats.ring_mean and loaded.stats.image_mean
    assert np.array_equal(direct.numpy(), loaded.predict(data))
    assert predictor.load(tmp_path / "best").predict(data).shape == (len(data), 3)


def test_image_spaces_feed_the_backbone_different_inputs():
    data = make_prepared(n=24, size=16, seed=1)
    seen = {}
    for space in ("srgb", "linear", "log"):
        cfg = TrainConfig(backbone="tinycnn", features="image", fusion="none", image_size=16,
                          image_space=space)
        stats = fit_stats(data, cfg)
        model = build_model(cfg, stats)
        batch = encode(data, stats, cfg)
        x = (model.image_lut[batch["image"].long()] - model.image_mean) / model.image_std
        train = torch.as_tensor(data.indices("train"))
        seen[space] = x
        if space != "srgb":  # fitted on the training images: standardised there
            assert x[train].mean(dim=(0, 2, 3)).abs().max() < 1e-3
            assert (x[train].std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2
    assert not torch.allclose(seen["linear"], seen["log"])
