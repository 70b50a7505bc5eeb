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
On data without ring columns the sweep leaves mean+ring+meta and mean+inv+meta out of the
search and says so in one line (sweep.spaces.prune_features); pinning either is refused before
Ray starts. `inv` is the session-invariant block (raysweep/data/invariant.py: the patch over its
ring, in lightness and chromaticity), computed from the ring columns.

Early stopping: the learning rate decays over the whole budget, so the MLP keeps improving to
its last epochs (real phone data: the best trials peak at epochs 140-180 of 200, and a first rung
at 25 of 200 cut those late bloomers). ASHA compares at 1/4 and 3/4 of the budget
(GRACE_FRACTION 0.25, reduction factor 3: rungs 50 and 150 of 200), which keeps the rungs at the
same point of the curve when `--set epochs=N` changes the budget. Why these and not others
(benchmarks/RESULTS.md, search efficiency): ASHA replayed on the benchmark's kept sweeps in 60
trial orders per seed (results/search_replay_orders.md) finds no better plan: on TPE's curves
these rungs reach random search's best after a median 0.25 of random's epochs in 99% of the
orders, every plan from 1/4 to 5/16 ties, and first rungs at 1/8-3/16 miss it in 16-23% of the
orders (the late bloomers). In real sweeps on an idle machine (session 27, 5 seeds of 24 trials,
2 at a time, results/search_efficiency_tabular100.md): at 100 epochs TPE with these rungs reached
random search's final best in 5 of 5 seeds after a median 0.26 of random's wall time (target 1/3:
met) and 0.24 of its epochs, with a better best at equal wall time (2.327 against 2.402) and a
better champion test error (2.433 against 2.539). At the CPU benchmark's 16 epochs
(results/search_efficiency.md) it reached random's best in only 3 of 5 seeds, after 0.48 of
random's wall time and 0.56 of its epochs (why the short budget does worse is not measured). A TPE start-up of 4 trials instead of
6 (session 24, results/search_efficiency_s24.md) was no win, so TPE keeps its start-up at a
quarter of the budget.
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
