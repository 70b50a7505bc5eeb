"""Stage 1 of eval_winners: the sweep's leaders, each loaded with its checkpoint, its data, and
its predictions on the evaluated split."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from raysweep.data import splits
from raysweep.data.pipeline import load_prepared
from raysweep.data.prepared import Prepared, SplitSettings
from raysweep.errors import UserError
from raysweep.evaluate import trials
from raysweep.evaluate.record import EvalRun
from raysweep.synth import ensure_default_dataset
from raysweep.tracking.checkpoints import ensure_checkpoint
from raysweep.tracking.store import TRIAL_TAGS, Tracker, retry
from raysweep.tracking.store import tracking_uri as default_tracking_uri
from raysweep.train import predictor

log = logging.getLogger("raysweep.eval_winners")


@dataclass
class Leader:
    run_id: str
    trial_id: str
    tags: dict
    val: float  # best validation dE00 logged for the run
    parent_run_id: str
    why: list[str] = field(default_factory=list)
    predictor: object = None  # raysweep.train.predictor.Predictor
    checkpoint_dir: Path | None = None
    pred: np.ndarray | None = None  # (N, 3) Lab on the evaluated split
    data: Prepared | None = None  # the whole dataset as this leader was trained on it
    label: str | None = None  # a name of its own (the ensemble candidate, `ensemble:topK`)

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        t = self.tags
        used = [str(t.get(k)) for k in ("backbone", "fusion", "features", "crop")
                if t.get(k) not in (None, "", "-")]  # a tabular run: no backbone, no crop
        return f"{self.trial_id or self.run_id[:8]} ({'/'.join(used)})"


def pick_leaders(runs: pd.DataFrame, top_k: int, per_group: Sequence[str]) -> pd.DataFrame:
    """Top k finished runs by validation score, plus the best of every group value."""
    # a NaN or infinite validation score (diverged weights) can never lead
    score = pd.to_numeric(runs[trials.METRIC], errors="coerce")
    ok = runs[(runs["status"] == "FINISHED") & np.isfinite(score)]
    ok = ok.sort_values(trials.METRIC).reset_index(drop=True)
    why: dict[str, list[str]] = {}
    for rank, rid in enumerate(ok["run_id"].head(top_k)):
        why.setdefault(rid, []).append(f"top {rank + 1}")
    for dim in per_group:
        for value, g in ok.groupby(dim, sort=True):
            if value != "-":  # "-": a dimension the run never used (a tabular run's backbone)
                why.setdefault(g["run_id"].iloc[0], []).append(f"best {dim}={value}")
    picked = ok[ok["run_id"].isin(why)].copy()
    picked["why"] = picked["run_id"].map(lambda r: ", ".join(why[r]))
    return picked


def fetch_checkpoint(run_id: str, uri: str, dst: Path) -> Path:
    """The run's `checkpoint/` artifact; a run the sweep did not copy (only its top-K are) is
    copied from its checkpoint URI first."""
    return ensure_checkpoint(Tracker("", "", uri=uri), run_id, dst)


def data_source(client, parent_run_id: str, meta: dict, given: str | None) -> str | Path:
    """Where the sweep's dataset lives: --data, the sweep's `data` param, or the split file."""
    if given:
        return given
    try:
        recorded = retry(client.get_run, parent_run_id).data.params.get("data", "")
    except Exception:  # noqa: BLE001 - a deleted parent: fall through to the split file
        recorded = ""
    if recorded == "synthetic default":
        return ensure_default_dataset()
    if recorded and not recorded.startswith("<"):
        return recorded
    split_file = meta.get("split_file") or ""
    if split_file and os.path.exists(split_file):
        card = splits.read(split_file)[1].get("card")
        if card:
            return card
    raise UserError("cannot tell which dataset the sweep was trained on", where=f"run "
                    f"{parent_run_id}", fix="pass --data with the dataset card the sweep used")


def check_identity(data: Prepared, meta: dict, run_id: str) -> None:
    for key in ("content_hash", "split_id"):
        want, have = meta.get(key), data.info.get(key)
        if want and want != have:
            raise UserError(f"the dataset's {key} is {have!r} but run {run_id} was trained with "
                            f"{want!r}: its test split would not be the photos it never saw",
                            where=str(data.info.get("card", "dataset")),
                            fix="pass --data with the exact dataset (and split settings) the "
                                "sweep used, or re-run the sweep on this dataset")


def find_leaders(r: EvalRun) -> None:
    """The sweep (experiment, parent run) and its leaders by validation score."""
    s = r.settings
    r.client = trials.client_for(s.tracking_uri)
    r.uri = s.tracking_uri or default_tracking_uri()
    r.exp_id, parent, r.label = trials.resolve_sweep(r.client, None, s.experiment, s.parent_run)
    runs = trials.runs_frame(r.client, r.exp_id, parent)
    r.picked = pick_leaders(runs, s.top_k, s.per_group)
    if r.picked.empty:
        raise UserError(f"no FINISHED trial with a {trials.METRIC} in {r.label}",
                        fix="wait for the sweep to finish, or check it with "
                            "`python -m raysweep.summarize`")
    r.study = retry(r.client.get_experiment, r.exp_id).name


def load_leaders(r: EvalRun) -> None:
    """Each picked run's checkpoint and data, and its predictions on the split; best first."""
    loaded: dict = {}
    for row in tqdm(list(r.picked.itertuples()), desc="leaders", unit="run", file=sys.stderr,
                    disable=len(r.picked) < 2):
        ld = _load_leader(r, row, loaded)
        if ld is not None:
            r.leaders.append(ld)
    if not r.leaders:
        raise UserError(f"none of the {len(r.picked)} leaders has a checkpoint artifact "
                        "with finite predictions", where="; ".join(r.refused) or None,
                        fix="check that the sweep logged `checkpoint/` (MLflow UI) and that "
                            "its trials did not diverge (lower lr, enable grad_clip)")
    r.leaders.sort(key=lambda ld: ld.val)


def _load_leader(r: EvalRun, row, loaded: dict) -> Leader | None:
    """One picked run as a Leader with its predictions; None when it is skipped or refused."""
    s = r.settings
    data, split = s.data, s.split
    try:
        ckpt_dir = fetch_checkpoint(row.run_id, r.uri, r.work / row.run_id)
    except Exception as e:  # noqa: BLE001 - one missing artifact should not end it
        log.warning("run %s has no usable checkpoint artifact (%s): skipped", row.run_id, e)
        return None
    ld = Leader(row.run_id, row.trial_id, {k: getattr(row, k) for k in TRIAL_TAGS},
                float(getattr(row, trials.METRIC)), row.parent_run_id, [row.why])
    ld.predictor = predictor.load(ckpt_dir, device="cpu")
    ld.checkpoint_dir = ckpt_dir
    meta, cfg = ld.predictor.meta, ld.predictor.cfg
    if isinstance(data, Prepared):
        d = data
    else:
        key = (meta.get("crop") or cfg.crop, int(meta.get("size") or cfg.image_size),
               cfg.split_by, cfg.val_fraction, cfg.test_fraction, cfg.seed)
        if key not in loaded:
            src = data_source(r.client, ld.parent_run_id, meta, data)
            loaded[key] = load_prepared(src, crop=key[0], size=key[1],
                                        split=SplitSettings(*key[2:]))
        d = loaded[key]
    check_identity(d, meta, ld.run_id)
    ld.data = d
    sub = d.subset(d.indices(split))
    if r.eval_data is None:
        r.eval_data, r.base_data = sub, d
    elif not np.array_equal(sub.sample_id, r.eval_data.sample_id):
        raise UserError(f"run {ld.run_id} was evaluated on other photos than the first "
                        "leader (different split)", fix="evaluate one sweep at a time")
    ld.pred = ld.predictor.predict(sub)
    if not np.isfinite(ld.pred).all():
        # diverged weights: a NaN colour scores no error at all in a naive mean, so the
        # leader is refused here rather than ranked (it can never be champion)
        bad = int((~np.isfinite(ld.pred).all(axis=1)).sum())
        log.warning("run %s predicts non-finite Lab for %d of %d %s photos: refused as "
                    "a leader", ld.run_id, bad, len(ld.pred), split)
        r.refused.append(f"{ld.name} refused: non-finite predictions on {bad} of "
                         f"{len(ld.pred)} {split} photos")
        return None
    return ld
