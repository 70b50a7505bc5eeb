"""Fusion: how should metadata enter the image model, and does background context help?

Background context comes three ways: in the crop (adaptive_bg vs adaptive_nobg), pooled apart
from the patch (pooling=patch_surround, bg crops only), and as the ring statistics block.

Scientific: fusion (concat = late, film = metadata modulates feature maps, xattn = metadata
tokens attend to image tokens), features (image+meta, image+mean, image+mean+meta,
image+mean+ring+meta), crop background (adaptive_bg vs adaptive_nobg), pooling (avg vs
patch_surround, with a bg crop).
Nuisance: lr, weight_decay, dropout, head (residual or ccm where the preset has the mean colour;
lab otherwise); film_stages for film; xattn_heads and xattn_dim for xattn.
Fixed: smallcnn (width 32) at 64 px in linear light, batch 64, 40 epochs, loss dE00 + MSE(Lab)
decaying, split by tone_id.
"""

MAX_EPOCHS = 40
GRACE_PERIOD = 4
REDUCTION_FACTOR = 3
NUM_SAMPLES = 48
FIXED = {"backbone": "smallcnn", "width": 32, "image_size": 64, "batch_size": 64,
         "image_space": "linear", "epochs": MAX_EPOCHS}


def define_by_run(trial):
    fusion = trial.suggest_categorical("fusion", ["concat", "film", "xattn"])
    out = {
        "fusion": fusion,
        "features": trial.suggest_categorical(
            "features", ["image+meta", "image+mean", "image+mean+meta", "image+mean+ring+meta"]),
        "crop": trial.suggest_categorical("crop", ["adaptive_bg", "adaptive_nobg"]),
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
    }
    if out["crop"].endswith("_bg"):
        out["pooling"] = trial.suggest_categorical("pooling", ["avg", "patch_surround"])
    out["head"] = (trial.suggest_categorical("head", ["residual", "ccm"])
                   if "mean" in out["features"].split("+") else "lab")
    if fusion == "film":
        out["film_stages"] = trial.suggest_int("film_stages", 1, 3)
    if fusion == "xattn":
        out["xattn_heads"] = trial.suggest_categorical("xattn_heads", [2, 4])
        out["xattn_dim"] = trial.suggest_categorical("xattn_dim", [32, 64])
    return out
