"""How much of `oracle:observable`'s accuracy comes from knowing each session's TRUE background
reflectance, which no photo shows?

The tier reads the light off the photo's background ring, which only works if the ring's
reflectance is known (raysweep.synth.oracle.KNOWS). Issue 22 asks the new-session champion to
beat it. This benchmark scores the same estimator on the default synthetic dataset three ways, so
the comparison can be read for what it is:

- the true reflectance of every session's background (the tier as it is);
- the nominal reflectance of its background TYPE only, which a user could write down: grey card
  0.18, neutral paper the middle of the generator's 0.35-0.88 range, and for a coloured surface
  the mean of this dataset's coloured backgrounds;
- one reflectance for every session: the mean of this dataset's backgrounds.

No labels are used by any variant; each photo is scored against its ground truth.

    python -m benchmarks.oracle_knowledge [--quick]
"""

from __future__ import annotations

import dataclasses
import json
import re
import time

import numpy as np
import pandas as pd

from benchmarks import RESULTS, Section, describe_machine, load_note, machine, md_table
from benchmarks import main as bench_main

PAPER_MID = (0.35 + 0.88) / 2  # raysweep.synth.scene._background draws neutral paper from here
GREY_CARD = 0.18


def _backgrounds(sets) -> dict[str, dict[int, np.ndarray]]:
    """variant -> set index -> the reflectance the estimator is told."""
    true = {i: s.background for i, s in enumerate(sets)}
    mean_all = np.mean(list(true.values()), axis=0)
    coloured = [s.background for s in sets if s.background_type == "coloured"]
    per_type = {"grey_card": np.full_like(mean_all, GREY_CARD),
                "neutral_paper": np.full_like(mean_all, PAPER_MID),
                "coloured": np.mean(coloured, axis=0) if coloured else mean_all}
    return {"true reflectance (the tier)": true,
            "nominal reflectance of its type": {i: per_type[s.background_type]
                                                for i, s in enumerate(sets)},
            "one reflectance for all sessions": {i: mean_all for i in true}}


def _on_new_session_tests(per_set: pd.Series, quick: bool) -> dict[str, float]:
    """The mean over the new-session benchmark's split seeds of the mean dE00 on each seed's
    test sessions (its results/new_sessions_quick.json), where that benchmark's champion is
    compared with the tier: the same photos, so the tier's row repeats its figure."""
    path = RESULTS / "new_sessions_quick.json"
    if quick or not path.exists():  # a quick run scores a third of each session's photos
        return {}
    seeds = json.loads(path.read_text())["per_seed"]
    means = [per_set[re.findall(r"set\d+", s["test sessions"])].mean() for s in seeds]
    return {f"new-session benchmark's test sessions ({len(seeds)} seeds)": float(np.mean(means))}


def run(quick: bool = False) -> Section:
    from raysweep.synth import ensure_default_dataset, oracle
    from raysweep.synth.measure import load_rgb

    card = ensure_default_dataset(progress=False)
    ctx, frame, root = oracle.load_context(card)
    if quick:  # every third skin tone of every session: the same sessions, a third of the photos
        tone = frame["sample_id"].str.split("_").str[1].str[1:].astype(int)
        frame = frame[tone % 3 == 0].reset_index(drop=True)
    images = [load_rgb(root / p) for p in frame["image"]]
    truth = frame[["target_L", "target_a", "target_b"]].to_numpy()
    kind = frame["set_id"].map(lambda s: ctx.sets[int(s.removeprefix("set"))].background_type)
    true_sets, rows, t0 = list(ctx.sets), [], time.time()
    for variant, refl in _backgrounds(true_sets).items():
        # the estimator reads a session's background from the generator context: tell it this
        ctx.sets[:] = [dataclasses.replace(s, background=refl[i]) for i, s in enumerate(true_sets)]
        de = oracle.delta_e00(oracle.observable_labs(ctx, frame, images), truth)
        by_kind = pd.Series(de).groupby(kind.to_numpy()).mean()
        per_set = pd.Series(de).groupby(frame["set_id"].to_numpy()).mean()
        rows.append({"the estimator is told": variant, "mean dE00": de.mean(),
                     "median dE00": float(np.median(de)),
                     **{f"{k} backgrounds": by_kind.get(k, np.nan)
                        for k in ("grey_card", "neutral_paper", "coloured")},
                     "worst session": per_set.max(),
                     **_on_new_session_tests(per_set, quick)})
    ctx.sets[:] = true_sets
    counts = kind.groupby(frame["set_id"].to_numpy()).first().value_counts().to_dict()
    cmd = "python -m benchmarks.oracle_knowledge" + (" --quick" if quick else "")
    return Section(data={"rows": rows, "photos": len(frame), "sessions_by_kind": counts,
                         "wall_s": time.time() - t0, "machine": machine()}, markdown="\n".join([
        "## What oracle:observable knows: the background's true reflectance\n",
        f"`oracle:observable` on {len(frame)} photos of the default synthetic dataset "
        f"({', '.join(f'{n} {k} sessions' for k, n in sorted(counts.items()))}), told three "
        "different things about each session's background; nothing else changes. Grey card "
        f"{GREY_CARD}, neutral paper {PAPER_MID:.3f} (the middle of the generator's range), "
        "coloured: the mean of this dataset's coloured backgrounds. A learned model on a new "
        "session knows none of these; the type is not in the data contract.\n",
        md_table(pd.DataFrame(rows)), "",
        "The last column, where present, is the mean over the new-session benchmark's split "
        "seeds (results/new_sessions_quick.json) of each seed's test sessions: the photos on "
        "which that benchmark compares its champion with this tier.\n",
        f"Machine: {describe_machine()}; {load_note()}.\n", f"Command: `{cmd}`\n"]))


if __name__ == "__main__":
    bench_main("oracle_knowledge", run)
