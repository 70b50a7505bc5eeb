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
something: at 1/4 and 3/4 of the budget (GRACE_FRACTION 0.25, reduction factor 3: rungs 10 and
30 of 40), which moves with `--set epochs=N`. What the benchmark says
(benchmarks/results/search_efficiency.md: 5 seeds of 16 trials x 8 epochs, 2 at a time): TPE
with these rungs reached random search's final best after a median 0.59 of random's wall time
(4 of 5 seeds; target 1/3: missed) and 0.47 of its epochs, with a better best than random's at
equal wall time (3.408 against 3.461) and a better champion test error (4.215 against 4.353);
the same rungs in 3 Hyperband brackets reached random's best in only 3 of 5 seeds and ended
worse (3.505). ASHA replayed on random's own curves there kept random's winner in 4 of 5 seeds
with a first rung at 1/3 (factor 2 or 3) against 3 of 5 with these, as in the run before
(results/search_efficiency_previous.md): the candidate for the next measurement, not yet run
in real sweeps (session 24 spent its timing runs on `tabular` at load 15-41: still unmeasured,
so the space keeps 1/4 and 3). At this benchmark size the 1/3 target is out of reach for any
rungs: each sweep's set-up before its first result (median 9 s) is 0.27 of random's 33-s span,
which leaves about 2 s of training for the 1/3. The sampler is raysweep's TPE for trials in
flight (`raysweep/sweep/strategy.py`).
"""

MAX_EPOCHS = 40
GRACE_FRACTION = 0.25
GRACE_PERIOD = 10  # GRACE_FRACTION of MAX_EPOCHS, for readers of the absolute value
REDUCTION_FACTOR = 3
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
