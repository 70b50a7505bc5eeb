"""Tabular: which model turns a spreadsheet of measured colours + EXIF into the true colour?

For users without photos in raysweep's hands: a manifest with the patch colour measured in each
photo (`mean_L/a/b`), the EXIF columns and camera, and optionally the background-ring columns
(`ring_*`). No CNN; the conditioning MLP is the model, and the head either predicts the colour
(lab) or corrects the measured one (residual: + a Lab correction; ccm: a colour-correction matrix
on its linear RGB). Defaults come from a real phone dataset, where an MLP at lr 3e-3 for 200
epochs reached 2.94 mean dE00 against 3.65 for gradient boosting, and a residual MLP trained on
dE00 about 2.85.

Scientific: features (mean+meta vs mean+ring+meta), head (residual, ccm, lab).
Nuisance: lr, weight_decay, dropout, meta_hidden, batch_size, aux_weight.
Fixed: fusion none (the tabular MLP), 200 epochs with ASHA grace 25, dE00 + MSE(Lab) decaying,
split by tone_id. On data without ring columns, pin `--set features=mean+meta`.
"""

MAX_EPOCHS = 200
GRACE_PERIOD = 25
REDUCTION_FACTOR = 3
NUM_SAMPLES = 24
FIXED = {"fusion": "none", "epochs": MAX_EPOCHS, "warmup_epochs": 2.0, "aux_loss": "mse_lab",
         "aux_schedule": "linear_decay", "split_by": "tone_id", "device": "auto"}


def define_by_run(trial):
    return {
        "features": trial.suggest_categorical("features", ["mean+ring+meta", "mean+meta"]),
        "head": trial.suggest_categorical("head", ["residual", "ccm", "lab"]),
        "lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        "meta_hidden": trial.suggest_categorical("meta_hidden", [64, 128, 256]),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        "aux_weight": trial.suggest_float("aux_weight", 0.01, 0.3, log=True),
    }
