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
(benchmarks/results/search_efficiency.md, session 27, an idle machine: 5 seeds of 16 trials x 8
epochs, 2 at a time): TPE with these rungs reached random search's final best in 3 of 5 seeds,
after a median 0.76 of random's wall time (target 1/3: missed) and 0.61 of its epochs; at equal
wall time its best was better (3.412 against 3.539), its champion's test error worse (4.458
against 4.353). Session 23's run (results/search_efficiency_s23.md, a loaded machine) had 0.59,
3.408 against 3.461 and 4.215 against 4.353; there the same rungs in 3 Hyperband brackets ended
worse (3.505). ASHA replayed on random's own curves kept random's winner in 4 of 5 seeds with a
first rung at 1/3 (factor 2 or 3) against 3 of 5 with these
(results/search_efficiency_previous.md): a candidate not yet run in real sweeps, so the space keeps 1/4 and 3. At this size each sweep's
set-up before its first result is now about 4 s of random's 16-s span (9 s of 33 s in session
23), and the share of random's wall time (0.76) lags the share of its epochs (0.61): what each
trial costs besides its epochs does not shrink when ASHA stops it early. At 20 epochs
(results/search_efficiency_quickstart20.md, session 27) it never reached random's final best (0
of 5 seeds; 2.956 against 2.823); its champion's test error was about equal (3.599 / 3.604):
these rungs and this sampler do not beat random search on this space yet. The sampler is raysweep's TPE for trials in
flight (`raysweep/sweep/strategy.py`). Nor does a bigger trial budget (session 28, 48 trials,
results/search_efficiency_quickstartx48.md and search_efficiency_quickstart20_quickstartx48.md):
at 20 epochs over 10 seeds the default reached random's final best in 4 (target 1/3 of random's
time: missed), no worse at equal wall time in 7, with the worse champion (3.729 against 3.585);
rungs at 1/8 and 3/8 (grace 1/8) did worse than these. The space is small (3 x 2 choices and one
decade of lr), so random draws cover it; what this sweep gets from the search is a best about
equal to random's in about 0.6 of its time. NUM_SAMPLES stays 16: more trials bought no
measured gain and would lengthen `make demo`, whose sweep is most of its time.
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
