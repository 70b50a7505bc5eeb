"""Features, backbones, fusions, heads and losses: every combination builds, runs and learns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from raysweep import color
from raysweep.config import FEATURES, FUSIONS, TrainConfig
from raysweep.errors import UserError
from raysweep.models import build_model
from raysweep.models.backbones import create_backbone
from raysweep.models.heads import LabHead, LinRGBHead
from raysweep.models.inputs import FeatureStats, camera_index, encode, fit_stats, hash_ngrams
from raysweep.train.losses import Loss, aux_weight
from tests.helpers.fakes import make_prepared


@pytest.fixture(scope="module")
def images():
    return make_prepared(n=24, size=16, seed=1)


@pytest.fixture(scope="module")
def tabular():
    return make_prepared(n=24, tabular=True, seed=2)


def combos():
    for backbone in ("tinycnn", "smallcnn"):
        for features in FEATURES:
            for fusion in FUSIONS:
                try:
                    TrainConfig(backbone=backbone, features=features, fusion=fusion).validate()
                except UserError:
                    continue  # e.g. film on a preset without image: rejected by the config
                yield backbone, features, fusion


def _perturb(model: torch.nn.Module) -> None:
    """Break zero inits (FiLM generators start at 0) so that every input can matter."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("backbone,features,fusion", list(combos()))
def test_forward_backward_every_combination(backbone, features, fusion, images, tabular):
    torch.manual_seed(0)
    cfg = TrainConfig(backbone=backbone, features=features, fusion=fusion, width=8,
                      text_embed="hash", image_size=16)
    data = images if cfg.uses_image else tabular
    stats = fit_stats(data, cfg)
    batch = encode(data, stats, cfg)
    model = build_model(cfg, stats)
    pred = model(batch)
    assert pred.shape == (len(data), 3)
    assert torch.isfinite(pred).all()
    assert (pred[:, 0] >= 0).all() and (pred[:, 0] <= 100).all()
    loss, _ = Loss(cfg)(pred, batch["target"], epoch=0)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0

    # The conditioning inputs must reach the output exactly when the fusion uses them.
    model.eval()
    _perturb(model)
    uses_cond = cfg.uses_cond and (not cfg.uses_image or fusion != "none")
    changed = {k: v for k, v in batch.items()}
    for key in ("meta", "mean", "ring", "inv"):
        if key in changed:
            changed[key] = changed[key] + 1.0
    with torch.no_grad():
        diff = (model(batch) - model(changed)).abs().max()
    assert (diff > 1e-4) == uses_cond, f"conditioning effect {float(diff)}"


@pytest.mark.parametrize("fusion", ["none", "concat", "film", "xattn"])
def test_timm_resnet18_at_32px(fusion):
    data = make_prepared(n=12, size=32, seed=3)
    cfg = TrainConfig(backbone="resnet18", fusion=fusion, features="image+mean+meta",
                      image_size=32)
    stats = fit_stats(data, cfg)
    batch = encode(data, stats, cfg)
    model = build_model(cfg, stats)
    pred = model(batch)
    loss, _ = Loss(cfg)(pred, batch["target"], epoch=0)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    backbone_grads = [p.grad for p in model.fusion.backbone.parameters() if p.grad is not None]
    assert backbone_grads and sum(float(g.abs().sum()) for g in backbone_grads) > 0


def test_backbone_interface_and_film_hook():
    x = torch.rand(2, 3, 16, 16)
    for name in ("tinycnn", "smallcnn", "resnet18"):
        bb = create_backbone(name, width=8).eval()
        feats, pooled = bb(x)
        assert [f.shape[1] for f in feats] == bb.channels
        assert pooled.shape == (2, bb.num_features)
        # FiLM with scale -1 and shift 3 on the last stage: its output becomes exactly 3.
        film = [None] * len(bb.channels)
        c = bb.channels[-1]
        film[-1] = (-torch.ones(2, c), torch.full((2, c), 3.0))
        feats2, pooled2 = bb(x, film=film)
        assert torch.allclose(feats2[-1], torch.full_like(feats2[-1], 3.0))
        assert torch.allclose(pooled2, torch.full_like(pooled2, 3.0))
        # The hook only acts during that call.
        assert torch.allclose(bb(x)[1], pooled)


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(UserError) as err:
        create_backbone("resnet_nonexistent")
    msg = err.value.message()
    assert "smallcnn" in msg and "tinycnn" in msg and "any timm model" in msg


def test_timm_local_weights_file(tmp_path):
    import timm

    full = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(full.state_dict(), path)
    bb = create_backbone("resnet18", weights_path=str(path))
    loaded = dict(bb.body.named_parameters())["conv1.weight"]
    assert torch.equal(loaded, full.conv1.weight)
    with pytest.raises(UserError, match="does not exist"):
        create_backbone("resnet18", weights_path=str(tmp_path / "missing.pth"))


def test_stats_fitted_on_train_only_and_json_roundtrip(images):
    cfg = TrainConfig(features="image+mean+meta", text_embed="hash", image_size=16)
    base = fit_stats(images, cfg)
    poisoned = make_prepared(n=24, size=16, seed=1)
    held_out = poisoned.split != "train"
    poisoned.meta[held_out] = 1e6
    poisoned.mean_lab[held_out] = -1e6
    poisoned.camera[held_out] = "cam_never_in_train"
    assert fit_stats(poisoned, cfg) == base
    again = FeatureStats.from_dict(json.loads(json.dumps(base.to_dict())))
    assert again == base
    assert "cam_never_in_train" not in base.cameras


def test_missing_flags_and_unknown_camera(images):
    cfg = TrainConfig(features="image+mean+meta", image_size=16)
    stats = fit_stats(images, cfg)
    t = encode(images, stats, cfg)
    m = len(images.meta_names)
    missing = np.isnan(images.meta)
    assert missing.any()
    values, flags = t["meta"][:, :m].numpy(), t["meta"][:, m:].numpy()
    assert np.array_equal(flags == 1, missing)
    assert (values[missing] == 0).all() and np.isfinite(values).all()
    assert np.isfinite(t["mean"].numpy()).all()
    train = images.indices("train")
    ok = ~missing[train]
    assert abs(values[train][ok[:, 0], 0].mean()) < 1e-5  # normalised on train
    idx = camera_index(np.array(["cam_a", "brand_new_camera"]), stats)
    assert idx[0] >= 1 and idx[1] == 0


def test_hash_ngram_text_embedding():
    v = hash_ngrams(["Apple iPhone 12", "Apple iPhone 13", "Samsung SM-G991B", "Apple iPhone 12"])
    assert v.shape == (4, 64)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    assert np.array_equal(v[0], v[3])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # shared n-grams -> closer


def test_sentence_text_embedding_needs_a_local_model(monkeypatch, images):
    monkeypatch.delenv("RAYSWEEP_TEXT_MODEL", raising=False)
    with pytest.raises(UserError, match="RAYSWEEP_TEXT_MODEL"):
        fit_stats(images, TrainConfig(text_embed="sentence", image_size=16))


def test_image_preset_on_tabular_data_is_a_clear_error(tabular):
    cfg = TrainConfig(features="image+meta", image_size=16)
    with pytest.raises(UserError, match="tabular"):
        encode(tabular, fit_stats(tabular, cfg), cfg)


@pytest.mark.parametrize("head_cls", [LabHead, LinRGBHead])
def test_heads_stay_in_range_and_start_at_the_mean(head_cls):
    init = torch.tensor([55.0, 12.0, 18.0])
    head = head_cls(8, 16, 0.0, init)
    with torch.no_grad():
        # The output bias alone maps to the initial Lab; the small last layer keeps inputs near it.
        assert torch.allclose(head.squash(head.mlp[-1].bias[None])[0], init, atol=1e-3)
        assert (head(torch.randn(16, 8)) - init).abs().max() < 3.0
        extreme = head(torch.randn(64, 8) * 1e4)
    assert torch.isfinite(extreme).all()
    assert (extreme[:, 0] >= 0).all() and (extreme[:, 0] <= 100.0 + 1e-3).all()
    assert (extreme[:, 1:].abs() <= 128.0 + 1e-3).all()


def test_loss_terms_reductions_and_schedules():
    target = torch.tensor([[50.0, 10.0, 15.0], [60.0, 5.0, 20.0], [40.0, 15.0, 10.0]])
    pred = target + torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 8.0]])
    de = color.delta_e00(pred, target)
    cfg = TrainConfig(aux_loss="none")
    assert torch.allclose(Loss(cfg)(pred, target, 0)[0], de.mean())
    assert torch.allclose(Loss(cfg.replace(reduction="median"))(pred, target, 0)[0], de.median())
    assert float(Loss(cfg)(target, target, 0)[0]) == 0.0
    mse = cfg.replace(aux_loss="mse_lab", aux_weight=0.5, aux_schedule="constant")
    expected = de.mean() + 0.5 * ((pred - target) ** 2).mean(-1).mean()
    assert torch.allclose(Loss(mse)(pred, target, 3)[0], expected)
    lin = cfg.replace(aux_loss="huber_linrgb", aux_weight=1.0)
    total, parts = Loss(lin)(pred, target, 0)
    assert float(parts["aux"]) > 0 and torch.isfinite(total)

    sched = TrainConfig(aux_weight=0.4, epochs=10)
    assert aux_weight(sched.replace(aux_schedule="constant"), 7) == pytest.approx(0.4)
    assert aux_weight(sched.replace(aux_schedule="linear_decay"), 0) == pytest.approx(0.4)
    assert aux_weight(sched.replace(aux_schedule="linear_decay"), 5) == pytest.approx(0.2)
    assert aux_weight(sched.replace(aux_schedule="cosine_decay"), 5) == pytest.approx(0.2)
    assert aux_weight(sched.replace(aux_schedule="cosine_decay"), 10) == pytest.approx(0.0)


def test_config_names_are_the_model_registries():
    # config.py lists the names (validation without torch); models/ maps them to classes
    from raysweep.config import HEADS
    from raysweep.models.fusion import FUSION_CLASSES
    from raysweep.models.heads import HEAD_CLASSES

    assert tuple(FUSION_CLASSES) == FUSIONS and tuple(HEAD_CLASSES) == HEADS
    from raysweep.config import WIDTH_BACKBONES  # config.ignored_fields: who reads `width`
    from raysweep.models.backbones import REGISTRY

    assert tuple(REGISTRY) == WIDTH_BACKBONES


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_the_tabular_spaces_dropout_and_weight_decay_reach_the_mlp_and_its_optimizer(
        tabular, optimizer):
    """Each draw of the tabular space: every dropout layer of the tabular MLP (conditioning
    encoder and head) has the drawn p, every parameter of 2 or more dimensions (weight matrices,
    the camera embedding) decays by the drawn weight_decay and no 1-D one (biases), and a step
    of the optimizer applies it."""
    from raysweep.sweep.spaces import check_space, load_space
    from raysweep.train.loop import make_optimizer

    samples = check_space(load_space("tabular"), {"optimizer": optimizer}, n=6, seed=3).samples
    assert len({s["dropout"] for s in samples}) > 1 and len({s["weight_decay"] for s in samples}) > 1
    for sample in samples:
        cfg = TrainConfig.from_dict(sample)
        model = build_model(cfg, fit_stats(tabular, cfg)).double()  # float64: see the step
        drops = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        assert len(drops) == 2 and drops == pytest.approx([cfg.dropout] * 2), (drops, cfg.dropout)
        opt = make_optimizer(cfg, model, torch.device("cpu"))
        decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
        params = list(model.parameters())
        assert len(decay) == len(params)  # every parameter in exactly one group
        for p in params:
            assert decay[id(p)] == (cfg.weight_decay if p.ndim >= 2 else 0.0)
        assert any(isinstance(opt, kind) for kind in (torch.optim.AdamW, torch.optim.SGD))
        assert opt.defaults["lr"] == cfg.lr and isinstance(opt, torch.optim.SGD) == (optimizer == "sgd")
        # and the optimizer applies it: one step on zero gradients only decays, by lr x wd
        # (AdamW, decoupled) or, as SGD's first Nesterov step with momentum 0.9 on the L2
        # gradient wd x w, by 1.9 lr x wd; as little as 1e-9, hence float64
        weight = model.head.mlp[1].weight
        before = weight.detach().clone()
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
        shrink = 1 - weight.detach() / before
        expected = cfg.lr * cfg.weight_decay * (1.9 if optimizer == "sgd" else 1.0)
        assert torch.allclose(shrink, torch.full_like(shrink, expected), rtol=1e-6), expected
