"""MLflow conventions: store access with one failure policy (store.py), the Tune callback that
logs trials from the driver (callback.py) and secrets kept out of every logged string
(secrets.py)."""
