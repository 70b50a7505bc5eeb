"""Full: the whole design space at once, for a large cluster budget.

Which combination of input features, crop, backbone, fusion and loss predicts skin colour best?
Conditional parameters apply only where they mean something: fusion only for image presets
(film/xattn only when there is metadata or a mean colour to condition on), FiLM stages only for
film, attention sizes only for xattn, the auxiliary weight only with an auxiliary loss, and
non-image presets (mean+meta, meta, mean) use the tabular MLP.

Scientific: features (every preset, with and without the ring block), crop (4 variants),
backbone, fusion, head (correcting heads only where the preset has the mean colour), image_space,
pooling (patch_surround only on a crop with background).
Nuisance: image_size, lr, weight_decay, dropout, optimizer, batch_size, aux_loss, aux_weight,
film_stages, xattn_heads, xattn_dim.
Fixed: 60 epochs (ASHA grace 5), aux_schedule linear_decay, split by tone_id.
"""

MAX_EPOCHS = 60
GRACE_PERIOD = 5
REDUCTION_FACTOR = 3
NUM_SAMPLES = 256
FIXED = {"epochs": MAX_EPOCHS, "aux_schedule": "linear_decay"}

IMAGE = ["image", "image+mean", "image+meta", "image+mean+meta", "image+mean+ring+meta",
         "image+ring+meta"]
TABULAR = ["mean+meta", "meta", "mean", "mean+ring+meta", "ring+meta"]


def define_by_run(trial):
    features = trial.suggest_categorical("features", IMAGE + TABULAR)
    out = {
        "features": features,
        "lr": trial.suggest_float("lr", 1e-4, 2e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.4),
        "optimizer": trial.suggest_categorical("optimizer", ["adamw", "sgd"]),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
    }
    aux = trial.suggest_categorical("aux_loss", ["none", "mse_lab", "huber_lab", "mse_linrgb"])
    out["aux_loss"] = aux
    if aux != "none":
        out["aux_weight"] = trial.suggest_float("aux_weight", 0.01, 1.0, log=True)
    heads = ["lab", "linrgb"] + (["residual", "ccm"] if "mean" in features.split("+") else [])
    out["head"] = trial.suggest_categorical(f"head_{len(heads)}", heads)
    if features in TABULAR:
        out["fusion"] = "none"  # the tabular MLP; crop and size do not apply
        return out
    out["crop"] = trial.suggest_categorical(
        "crop", ["center_bg", "center_nobg", "adaptive_bg", "adaptive_nobg"])
    out["image_size"] = trial.suggest_categorical("image_size", [64, 128])
    out["image_space"] = trial.suggest_categorical("image_space", ["srgb", "linear", "log"])
    if out["crop"].endswith("_bg"):
        out["pooling"] = trial.suggest_categorical("pooling", ["avg", "patch_surround"])
    out["backbone"] = trial.suggest_categorical(
        "backbone", ["smallcnn", "resnet18", "efficientnet_b0", "mobilenetv3_large_100",
                     "convnext_tiny"])
    if features == "image":
        out["fusion"] = "none"
        return out
    fusion = trial.suggest_categorical("fusion", ["concat", "film", "xattn"])
    out["fusion"] = fusion
    if fusion == "film":
        out["film_stages"] = trial.suggest_int("film_stages", 1, 3)
    elif fusion == "xattn":
        out["xattn_heads"] = trial.suggest_categorical("xattn_heads", [2, 4])
        out["xattn_dim"] = trial.suggest_categorical("xattn_dim", [32, 64])
    return out
