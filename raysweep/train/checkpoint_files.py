"""The checkpoint format's file names, apart from the code that writes them (checkpoint.py).

Torch-free, as is `transfer.py`: the sweep's driver, which trains nothing, names these files
(raysweep.tracking.checkpoints copies the served ones) without importing torch (seconds).
"""

MODEL_FILE, META_FILE, STATE_FILE = "model.pt", "checkpoint.json", "train_state.pt"
CHECKPOINT_FILES = (MODEL_FILE, META_FILE, STATE_FILE)
