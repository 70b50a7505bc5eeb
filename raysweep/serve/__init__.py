"""Serving: photos to predictions (inference.py), loading a model by path or registry URI
(loading.py) and the MLflow pyfunc model (pyfunc.py)."""
