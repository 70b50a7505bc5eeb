"""Quickstart: do the background ring and a colour-correcting head let a small CNN read the colour?

A CPU-friendly first sweep (32 px crops, a 16-channel smallcnn, at most 40 epochs) that finishes in
a few minutes on a laptop and fills MLflow with comparable runs. The image is fed as linear light
(the physics of exposure and illuminant is multiplicative there), the head corrects the colour
measured in the photo instead of guessing it from scratch (residual: + a Lab correction; ccm: a
colour-correction matrix on the measured linear RGB), and the ring block hands the network the
light reference around the patch. 40 epochs because the winner of 24 was still improving at its
last epoch; ASHA stops the weak trials early.

Scientific: features (image+mean+meta vs image+mean+ring+meta vs image+mean+inv+meta: the
session-invariant block, raysweep/data/invariant.py), head (residual vs ccm).
Nuisance: lr, weight_decay.
Fixed: smallcnn width 16, concat fusion, image_space linear, crop adaptive_bg at 32 px, batch 64,
40 epochs, loss dE00 + 0.1 MSE(Lab) decaying, split by tone_id.

Early stopping: the learning rate decays over the whole budget and nearly every trial is at its
best in its last epoch, so ASHA compares late enough for the order of the trials to mean
something: at 1/3 and 2/3 of the budget, keeping half at each (GRACE_FRACTION 1/3, reduction
factor 2: rungs 13 and 26 of 40), which moves with `--set epochs=N`. Why there: ASHA replayed on
random search's recorded curves (`benchmarks/search_replay.py`, in benchmarks/RESULTS.md's
"Search efficiency") keeps random's winner more often with a later first rung and a gentler cut
than with the earlier 1/4 and factor 3 (8 epochs: rungs 3 and 6 instead of 2 and 6): this
space's winners are late bloomers. The sampler is raysweep's TPE for trials in flight
(`raysweep/sweep/strategy.py`).
"""

MAX_EPOCHS = 40
GRACE_FRACTION = 1 / 3
GRACE_PERIOD = 13  # GRACE_FRACTION of MAX_EPOCHS, for readers of the absolute value
REDUCTION_FACTOR = 2
NUM_SAMPLES = 16
FIXED = {"backbone": "smallcnn", "fusion": "concat", "image_space": "linear",
         "crop": "adaptive_bg", "image_size": 32, "width": 16, "batch_size": 64,
         "epochs": MAX_EPOCHS, "warmup_epochs": 0.5, "device": "auto"}


def define_by_run(trial):
    return {
        "features": trial.suggest_categorical("features",
                                              ["image+mean+ring+meta", "image+mean+meta",
                                               "image+mean+inv+meta"]),
        "head": trial.suggest_categorical("head", ["residual", "ccm"]),
        "lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
    }
