"""`python -m raysweep.prepare`: see raysweep.data.prepare."""

from raysweep.data.prepare import load_prepared, main
from raysweep.errors import run_cli

__all__ = ["load_prepared", "main"]

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
