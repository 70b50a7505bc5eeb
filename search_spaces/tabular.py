"""Tabular: which model turns a spreadsheet of measured colours + EXIF into the true colour?

For users without photos in raysweep's hands: a manifest with the patch colour measured in each
photo (`mean_L/a/b`), the EXIF columns and camera, and optionally the background-ring columns
(`ring_*`). No CNN; the conditioning MLP is the model, and the head either predicts the colour
(lab) or corrects the measured one (residual: + a Lab correction; ccm: a colour-correction matrix
on its linear RGB). Defaults come from a real phone dataset, where an MLP at lr 3e-3 for 200
epochs reached 2.94 mean dE00 against 3.65 for gradient boosting, and a residual MLP trained on
dE00 about 2.85.

Scientific: features (mean+meta vs mean+ring+meta vs mean+inv+meta), head (residual, ccm, lab).
Nuisance: lr, weight_decay, dropout, meta_hidden, batch_size, aux_weight.
Fixed: fusion none (the tabular MLP), 200 epochs, dE00 + MSE(Lab) decaying, split by tone_id.
On data without ring columns, mean+ring+meta is refused: pin `--set features=mean+meta` or
`--set features=mean+inv+meta`. `inv` is the session-invariant block (raysweep/data/invariant.py:
patch over ring ratios and chromaticity, patch brightness per unit of EXIF exposure); without
ring columns its ring columns are missing (flagged) and only the exposure column informs.

Early stopping: the learning rate decays over the whole budget, so the MLP keeps improving to
its last epochs (real phone data: the best trials peak at epochs 140-180 of 200, and a first rung
at 25 of 200 cut those late bloomers). ASHA compares at 1/4 and 3/4 of the budget
(GRACE_FRACTION 0.25, reduction factor 3: rungs 50 and 150 of 200), which keeps the rungs at the
same point of the curve when `--set epochs=N` changes the budget. What the benchmark says
(benchmarks/RESULTS.md, "Search efficiency": 5 seeds of 12 trials x 16 epochs on the synthetic
set): TPE with these rungs was the best of the five methods measured there, reaching random
search's final best after a median 0.48 of random's time (random with the same rungs 0.58,
Optuna's TPE as installed at the old 1/8 rungs 0.67; target 1/3, missed) with a better final
best (2.687 against random's 2.763) and a champion test error as good (2.795 against 2.801). Replaying ASHA on random's own curves, rungs at 1/8 of the budget kept
random's winner in 5 of 5 seeds and would have been faster still (0.41 against 0.53 of random's
time, without each trial's start-up cost); that is not yet measured in real sweeps nor on a
200-epoch budget, where the earlier rung cut the winners, so the default stays at 1/4.
"""

MAX_EPOCHS = 200
GRACE_FRACTION = 0.25
GRACE_PERIOD = 50  # GRACE_FRACTION of MAX_EPOCHS, for readers of the absolute value
REDUCTION_FACTOR = 3
NUM_SAMPLES = 24
FIXED = {"fusion": "none", "epochs": MAX_EPOCHS, "warmup_epochs": 2.0, "aux_loss": "mse_lab",
         "aux_schedule": "linear_decay", "split_by": "tone_id", "device": "auto"}


def define_by_run(trial):
    return {
        "features": trial.suggest_categorical("features",
                                              ["mean+ring+meta", "mean+meta", "mean+inv+meta"]),
        "head": trial.suggest_categorical("head", ["residual", "ccm", "lab"]),
        "lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        "meta_hidden": trial.suggest_categorical("meta_hidden", [64, 128, 256]),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        "aux_weight": trial.suggest_float("aux_weight", 0.01, 0.3, log=True),
    }
