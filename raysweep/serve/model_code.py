"""The MLflow models-from-code entry point of a registered raysweep model.

`log_pyfunc` logs this file, not a pickled object: MLflow stores it as source beside the
checkpoint and `mlflow.pyfunc.load_model` (or `mlflow models serve`) runs it to get the model,
so loading a registered champion never unpickles anything. It must stay importable on its own:
the raysweep package travels with the model as its `code_paths`.
"""

import mlflow.models

from raysweep.serve.pyfunc import RaysweepModel

mlflow.models.set_model(RaysweepModel())
