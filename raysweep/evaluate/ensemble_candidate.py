"""The `ensemble:topK` candidate of an evaluation: the top-k leaders that can share one input,
averaged in CIELAB and scored on the validation split the way a leader is (never on test)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raysweep.data.prepared import Prepared
from raysweep.evaluate.stats import errors_of
from raysweep.serve.ensemble import EnsemblePredictor, geometry_of, identity_of


@dataclass
class Candidate:
    """The `ensemble:topK` candidate of an evaluation."""

    name: str
    predictor: EnsemblePredictor
    members: list  # the Leaders it averages
    data: Prepared  # the whole dataset, cut as its image members were trained on
    val: float  # mean validation dE00 of the mean prediction, as the loop scores a leader
    left_out: list[str]


def pick_members(leaders: list, k: int) -> tuple[list, list[str]]:
    """The top-k leaders (by validation) that can share one input: image members keep the best
    image leader's crop and size, and all share its data identity. Returns (members, notes)."""
    ranked = sorted(leaders, key=lambda ld: ld.val)[:k]
    lead = next((ld for ld in ranked if ld.predictor.cfg.uses_image), ranked[0] if ranked else None)
    members, notes = [], []
    for ld in ranked:
        g = geometry_of(ld.predictor)
        if g is not None and g != geometry_of(lead.predictor):
            notes.append(f"{ld.name} left out of the ensemble: crop/size {g} differs from "
                         f"{geometry_of(lead.predictor)}")
        elif identity_of(ld.predictor) != identity_of(lead.predictor):
            notes.append(f"{ld.name} left out of the ensemble: trained on other data")
        else:
            members.append(ld)
    return members, notes


def candidate(leaders: list, k: int) -> Candidate | None:
    """`ensemble:topK` of the leaders (each with `.predictor`, `.data`, `.val`, `.name`), scored
    on the validation split; None when fewer than two leaders can share one input."""
    members, notes = pick_members(leaders, k)
    if len(members) < 2:
        return None
    ens = EnsemblePredictor([ld.predictor for ld in members], [ld.name for ld in members],
                            info={"run_ids": [ld.run_id for ld in members]})
    data = next(ld.data for ld in members if ld.predictor is ens.lead)
    val = data.subset(data.indices("val"))
    score = float(np.mean(errors_of(ens.predict(val), val.target)[0]))
    return Candidate(f"ensemble:top{len(members)}", ens, members, data, score, notes)
