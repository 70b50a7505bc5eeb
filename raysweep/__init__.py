"""raysweep: predict the CIELAB colour of a skin patch from a photo and its camera metadata."""

import os

__version__ = "0.1.0"

# MLflow 3 reports usage to its makers' collector from every process that imports it: a config
# download from the internet at import, then a record per client call (a sweep makes thousands).
# raysweep makes no network call the user did not ask for, so it is off unless the user turns
# it on (MLFLOW_DISABLE_TELEMETRY=false). Set here, before any raysweep module imports mlflow,
# which reads it at import.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
