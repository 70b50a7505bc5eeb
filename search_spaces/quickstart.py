"""Quickstart: does camera metadata help a small CNN predict the patch colour?

A CPU-friendly first sweep (32 px crops, tiny/small CNNs, at most 24 epochs) that finishes in a
few minutes on a laptop and fills MLflow with comparable runs. (The quick study measured that a
16-channel smallcnn at 32 px keeps improving up to 24 epochs; ASHA stops the weak trials early.)

Scientific: features (image only vs image+meta vs image+mean+meta).
Nuisance: backbone (tinycnn, smallcnn), lr, weight_decay.
Fixed: crop adaptive_bg at 32 px, concat fusion (none for image only), width 16, batch 64,
24 epochs, loss dE00 + 0.1 MSE(Lab) decaying, split by tone_id.
"""

MAX_EPOCHS = 24
GRACE_PERIOD = 4
REDUCTION_FACTOR = 3
NUM_SAMPLES = 16
FIXED = {"crop": "adaptive_bg", "image_size": 32, "width": 16, "batch_size": 64,
         "epochs": MAX_EPOCHS, "warmup_epochs": 0.5, "device": "auto"}


def define_by_run(trial):
    features = trial.suggest_categorical("features", ["image", "image+meta", "image+mean+meta"])
    return {
        "features": features,
        "fusion": "none" if features == "image" else "concat",
        "backbone": trial.suggest_categorical("backbone", ["tinycnn", "smallcnn"]),
        "lr": trial.suggest_float("lr", 1e-3, 2e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
    }
