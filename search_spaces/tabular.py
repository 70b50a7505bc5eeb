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
(benchmarks/results/search_efficiency.md: 5 seeds of 24 trials x 16 epochs, 2 at a time, on the
synthetic set, on a machine shared with the test suite): TPE with these rungs reached random
search's final best after a median 0.39 of random's wall time (target 1/3: missed; 0.31 with
each sweep's set-up left out) and after 0.29 of random's epochs, the least work of the five
methods (random with the same rungs 0.39 of the epochs, TPE without stopping 0.46, the same
rungs in 3 Hyperband brackets 0.41), with a better final best than random's at equal wall time
in 5 of 5 seeds (2.675 against 2.744) and a champion test error level with random's (2.763
against 2.759: 0.004 worse, so that target is missed by 0.004; TPE without stopping 2.697).
ASHA replayed on random's own curves there kept random's winner in 5 of 5 seeds with these
rungs (0.39 of random's time); rungs at 1/10-1/8 with factor 3 are faster (0.34) but cut the
winner in 1 of 5, and 3 brackets over these rungs (BRACKETS = 3, `--brackets 3`) are slower
(0.51), so the default is plain ASHA at 1/4.
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
