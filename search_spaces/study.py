"""Study: which fusion wins, and does metadata help with and without background context?

The question of the published study (real phone photos: cross-attention, focused crops with
background, mean dE00 0.81; metadata helping most when the crop has no background), asked of the
synthetic dataset with tones held out (split by tone_id).

Scientific: fusion (none, concat, film, xattn) x features (image, image+mean, image+meta,
image+mean+meta, image+mean+ring+meta) x crop (adaptive_bg, adaptive_nobg). Of those 40
combinations 26 are distinct models: `none` ignores any non-image input, `concat` with nothing to
concatenate is the image model, and film/xattn need something to condition on. So the cells are,
per crop, `image` (fusion none) plus {concat, film, xattn} x {image+mean, image+meta,
image+mean+meta, image+mean+ring+meta}.
The cells are enumerated, not sampled: trial n trains cell n mod 20, so every cell gets the same
number of trials (a sampler would repeat some cells and skip others; the comparison needs all).
Nuisance: lr, weight_decay (tuned by the searcher across the trials of each cell).
Fixed: smallcnn (width 32) at 64 px in linear light, batch 64, 40 epochs, dE00 + MSE(Lab)
decaying, split by tone_id; the head corrects the measured colour (residual) wherever the preset
has it and predicts Lab otherwise (so "mean" effects include the head that uses it). ASHA starts
only after a quarter of the budget, to stop bad nuisance draws and not cells.
"""

CROPS = ["adaptive_bg", "adaptive_nobg"]
CONDITIONED = ["image+mean", "image+meta", "image+mean+meta", "image+mean+ring+meta"]
CELLS = [cell for crop in CROPS  # (crop, features, fusion)
         for cell in [(crop, "image", "none")] + [(crop, f, fu) for f in CONDITIONED
                                                 for fu in ("concat", "film", "xattn")]]

MAX_EPOCHS = 40
GRACE_PERIOD = 10
REDUCTION_FACTOR = 3
NUM_SAMPLES = 4 * len(CELLS)  # four nuisance draws per cell
FIXED = {"backbone": "smallcnn", "width": 32, "image_size": 64, "batch_size": 64,
         "image_space": "linear", "epochs": MAX_EPOCHS, "split_by": "tone_id"}


def define_by_run(trial):
    # The validation dry run replays choices on a stand-in that has no trial number.
    crop, features, fusion = CELLS[getattr(trial, "number", 0) % len(CELLS)]
    return {
        "crop": crop, "features": features, "fusion": fusion,
        "head": "residual" if "mean" in features.split("+") else "lab",
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
    }
