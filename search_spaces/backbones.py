"""Backbones: which image backbone gives the best colour at a fixed fusion and budget?

Trained from scratch (no weights are downloaded); on a GPU, small models share a GPU
(GPUS_PER_TRIAL = 0.25) and large ones can use --workers-per-trial for DDP.

Scientific: backbone (smallcnn, resnet18, efficientnet_b0, mobilenetv3_large_100,
convnext_tiny).
Nuisance: lr, weight_decay, batch_size, optimizer.
Fixed: concat fusion, image+mean+ring+meta features with the residual head, linear-light input,
adaptive_bg crop at 128 px, 40 epochs, loss dE00 + MSE(Lab) decaying, split by tone_id.
(sRGB input would suit ImageNet weights better; with weights_path set, pin image_space=srgb.)
"""

MAX_EPOCHS = 40
GRACE_PERIOD = 3
REDUCTION_FACTOR = 3
NUM_SAMPLES = 40
GPUS_PER_TRIAL = None  # 0.25 on a GPU cluster, CPU only otherwise
FIXED = {"fusion": "concat", "features": "image+mean+ring+meta", "head": "residual",
         "image_space": "linear", "crop": "adaptive_bg", "image_size": 128, "epochs": MAX_EPOCHS}


def define_by_run(trial):
    return {
        "backbone": trial.suggest_categorical(
            "backbone", ["smallcnn", "resnet18", "efficientnet_b0", "mobilenetv3_large_100",
                         "convnext_tiny"]),
        "optimizer": trial.suggest_categorical("optimizer", ["adamw", "sgd"]),
        "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
    }
