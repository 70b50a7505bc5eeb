"""How predictions are shown: the columns `predict` prints and writes, in table, CSV or JSON.

Apart from the model code so that `python -m raysweep.predict --help` offers the formats
without loading torch.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

FORMATS = ("table", "csv", "json")
OUTPUT_COLUMNS = ("photo", "L", "a", "b", "hex", "ita_deg", "ita_category", "camera", "notes")
# the error bound and OOD flags (raysweep.serve.bounds, raysweep.serve.ood) shown after the colour
TRUST_COLUMNS = ("de00_bound", "bound_level", "bound_regime", "flags", "unchecked")
SHORT_REGIME = {"new sessions": "new session", "seen sessions": "seen session"}


def format_output(df: pd.DataFrame, fmt: str) -> str:
    df = df.loc[:, [c for c in OUTPUT_COLUMNS + TRUST_COLUMNS if c in df.columns]]
    if fmt == "csv":
        return df.to_csv(index=False, float_format="%.3f")
    if fmt == "json":
        records = json.loads(df.to_json(orient="records", double_precision=4))
        for r in records:  # lists in JSON, ";"-joined in CSV and the table
            for c in ("flags", "unchecked"):
                if c in r:
                    r[c] = [f for f in str(r[c] or "").split(";") if f]
        return json.dumps(records, indent=1)
    shown = df.copy()
    if "de00_bound" in shown:  # "<= 2.31 (90%, new session)": the bound reads as a statement
        regime = shown.get("bound_regime", pd.Series([""] * len(shown), index=shown.index))
        shown["de00_bound"] = [
            f"<= {b:.2f} ({lv:.0%}{', ' + SHORT_REGIME.get(r, r) if r else ''})"
            if np.isfinite(b) else "-"
            for b, lv, r in zip(shown["de00_bound"], shown["bound_level"], regime)]
        shown = shown.drop(columns=["bound_level", "bound_regime"], errors="ignore")
        for c in ("flags", "unchecked"):  # a check not made is shown, never hidden as passed
            if c in shown:
                shown[c] = shown[c].replace("", "-")
    for c in ("L", "a", "b", "ita_deg"):
        shown[c] = shown[c].map(lambda v: f"{v:.2f}" if np.isfinite(v) else "-")
    return shown.to_string(index=False)
