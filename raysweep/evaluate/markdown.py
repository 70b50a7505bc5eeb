"""A data frame as a Markdown table: shared by the HTML/Markdown report and the trial summaries.

Its own module so that `summarize` writes its tables without loading the report's plotting stack.
"""
from __future__ import annotations

import pandas as pd


def frame_markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "_none_\n"
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "/") for v in row) + " |")
    return "\n".join(lines) + "\n"
