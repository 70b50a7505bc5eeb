"""Losses: does an auxiliary term help a model trained on dE00, and in which colour space?

Scientific: aux_loss (none, MSE or Huber in Lab or linear RGB), aux_weight and aux_schedule,
head (predict Lab directly, linear RGB converted to Lab, or correct the measured colour: residual
in Lab, ccm matrix on linear RGB), reduction (mean vs median dE00).
Nuisance: lr, weight_decay.
Fixed: smallcnn (width 32) with concat fusion, image+mean+meta features, linear-light input,
adaptive_bg crop at 64 px, 40 epochs, split by tone_id.
"""

MAX_EPOCHS = 40
GRACE_PERIOD = 4
REDUCTION_FACTOR = 3
NUM_SAMPLES = 40
FIXED = {"backbone": "smallcnn", "width": 32, "fusion": "concat", "features": "image+mean+meta",
         "image_space": "linear", "crop": "adaptive_bg", "image_size": 64, "epochs": MAX_EPOCHS}


def define_by_run(trial):
    aux = trial.suggest_categorical(
        "aux_loss", ["none", "mse_lab", "huber_lab", "mse_linrgb", "huber_linrgb"])
    out = {
        "aux_loss": aux,
        "head": trial.suggest_categorical("head", ["lab", "linrgb", "residual", "ccm"]),
        "reduction": trial.suggest_categorical("reduction", ["mean", "median"]),
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
    }
    if aux != "none":
        out["aux_weight"] = trial.suggest_float("aux_weight", 0.01, 1.0, log=True)
        out["aux_schedule"] = trial.suggest_categorical(
            "aux_schedule", ["constant", "linear_decay", "cosine_decay"])
    return out
