"""The sweep's leaders, re-evaluated on photos no selection saw (`run_eval_winners`).

Leaders are chosen by their best VALIDATION dE00 (MLflow metric history of FINISHED trial runs):
the top k, plus the best run of each value of the per-group dimensions, so that the study's
questions (metadata or not, background or not, fusion vs fusion) each have a contender. Their
`checkpoint/` artifacts are loaded with weights_only, the dataset is reloaded with the crop, size
and split each was trained on (its content hash and split id must match the checkpoint's), and
all are scored on the test split next to the classical baselines: mean, median and p95 dE00 with
bootstrap intervals, dE76, breakdowns, and paired comparisons on the same photos, with the
floors (raysweep.evaluate.floors) on synthetic data. The champion is the leader with the best
validation score (the test split never picks anything), or, when validation holds few unseen
capture sessions, the best of the top leaders re-scored by grouped k-fold over sessions
(raysweep.evaluate.selection), or the `ensemble:topK` mean when it beats every single leader on
validation. Its error bound is calibrated on validation and its coverage checked on the test
split; it is registered as an MLflow pyfunc model NAME@champion.
"""


from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from raysweep.data.prepared import Prepared
from raysweep.errors import UserError
from raysweep.evaluate import (
    baselines,
    breakdowns,
    coverage,
    ensemble_candidate,
    floors,
    report,
    selection,
    stats,
    trials,
)
from raysweep.fsutil import atomic_dir, check_replaceable
from raysweep.serve import bounds
from raysweep.serve import ensemble as serve_ensemble
from raysweep.tracking.store import TRIAL_TAGS, Tracker, retry
from raysweep.tracking.store import tracking_uri as default_tracking_uri

log = logging.getLogger("raysweep.eval_winners")
GROUP_DIMS = TRIAL_TAGS  # backbone, fusion, crop, features


@dataclass
class Leader:
    run_id: str
    trial_id: str
    tags: dict
    val: float  # best validation dE00 logged for the run
    parent_run_id: str
    why: list[str] = field(default_factory=list)
    predictor: object = None  # raysweep.train.checkpoint.Predictor
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


@dataclass
class EvalResult:
    out_dir: Path
    champion: str
    summary: pd.DataFrame
    breakdown: pd.DataFrame
    comparisons: pd.DataFrame
    predictions: pd.DataFrame
    eval_run_id: str | None = None
    model_uri: str | None = None
    coverage: pd.DataFrame | None = None  # the champion's bound on the split (evaluate.coverage)


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
    import mlflow.artifacts

    return Path(retry(mlflow.artifacts.download_artifacts, run_id=run_id,
                      artifact_path="checkpoint", dst_path=str(dst), tracking_uri=uri))


def data_source(client, parent_run_id: str, meta: dict, given: str | None) -> str | Path:
    """Where the sweep's dataset lives: --data, the sweep's `data` param, or the split file."""
    if given:
        return given
    try:
        recorded = retry(client.get_run, parent_run_id).data.params.get("data", "")
    except Exception:  # noqa: BLE001 - a deleted parent: fall through to the split file
        recorded = ""
    if recorded == "synthetic default":
        from raysweep.synth import ensure_default_dataset

        return ensure_default_dataset()
    if recorded and not recorded.startswith("<"):
        return recorded
    split_file = meta.get("split_file") or ""
    if split_file and os.path.exists(split_file):
        from raysweep.data.splits import read

        card = read(split_file)[1].get("card")
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


def score(preds: dict[str, np.ndarray], kinds: dict[str, str], target: np.ndarray,
          extra: dict[str, dict], n_boot: int, seed: int) -> tuple[pd.DataFrame, dict]:
    rows, errs = [], {}
    for name, pred in preds.items():
        e00, e76 = stats.errors_of(pred, target)
        errs[name] = e00
        rows.append({"model": name, "kind": kinds[name], **stats.summarize(e00, n_boot, seed),
                     **stats.summarize(e76, n_boot, seed, prefix="de76_"),
                     **extra.get(name, {})})
    return pd.DataFrame(rows), errs


def comparisons(leaders: list[Leader], errs: dict, best_baseline: str | None, n_boot: int,
                seed: int, champion: str | None = None) -> pd.DataFrame:
    """The study's questions, each as best-of-group A vs best-of-group B on the same photos;
    then the crowned `champion` (default: the best leader on validation) vs the best baseline."""
    ranked = sorted(leaders, key=lambda ld: ld.val)

    def best(pred) -> Leader | None:
        return next((ld for ld in ranked if pred(ld)), None)

    def uses_meta(ld):
        return "meta" in str(ld.tags.get("features", "")).split("+")

    def is_image(ld):
        return str(ld.tags.get("features", "")).startswith("image")

    pairs = [("metadata vs none", best(uses_meta), best(lambda ld: not uses_meta(ld))),
             ("background vs none",
              best(lambda ld: is_image(ld) and str(ld.tags.get("crop")).endswith("_bg")),
              best(lambda ld: is_image(ld) and str(ld.tags.get("crop")).endswith("_nobg")))]
    fusions = sorted({str(ld.tags.get("fusion")) for ld in leaders if is_image(ld)})
    for f1, f2 in combinations(fusions, 2):
        pairs.append((f"fusion {f1} vs {f2}",
                      best(lambda ld, f=f1: is_image(ld) and ld.tags.get("fusion") == f),
                      best(lambda ld, f=f2: is_image(ld) and ld.tags.get("fusion") == f)))
    rows = []
    for question, a, b in pairs:
        if a is not None and b is not None and a is not b:
            rows.append({"question": question, "a": a.name, "b": b.name,
                         **stats.paired_bootstrap(errs[a.name], errs[b.name], "mean", n_boot, seed)})
    champion = champion or (ranked[0].name if ranked else None)
    if champion and best_baseline:
        rows.append({"question": "champion vs best baseline", "a": champion,
                     "b": best_baseline, **stats.paired_bootstrap(
                         errs[champion], errs[best_baseline], "mean", n_boot, seed)})
    return pd.DataFrame(rows, columns=["question", "a", "b", "diff", "lo", "hi", "p_value", "n"])


def predictions_frame(data: Prepared, preds: dict, kinds: dict, errs: dict) -> pd.DataFrame:
    tones = breakdowns.skin_tone(data.target)
    frames = []
    for name, pred in preds.items():
        e00, e76 = stats.errors_of(pred, data.target)
        frames.append(pd.DataFrame({
            "sample_id": data.sample_id, "model": name, "kind": kinds[name],
            "camera": data.camera, "set_id": data.frame.get("set_id", pd.Series([""] * len(data))),
            "skin_tone": tones, "true_L": data.target[:, 0], "true_a": data.target[:, 1],
            "true_b": data.target[:, 2], "pred_L": pred[:, 0], "pred_a": pred[:, 1],
            "pred_b": pred[:, 2], "de00": e00, "de76": e76}))
    return pd.concat(frames, ignore_index=True)


def registry_name(study: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", study).strip("-") or "raysweep"


def run_eval_winners(experiment: str | None = None, parent_run: str | None = None,
                     top_k: int = 3, per_group: Sequence[str] = GROUP_DIMS,
                     split: str = "test", data: str | Path | Prepared | None = None,
                     out: str | Path = "winners", log_run: bool = True, register: bool = True,
                     n_boot: int = 2000,
                     seed: int = 0, tracking_uri: str | None = None,
                     baseline_names: Sequence[str] | None = None,
                     level: float = 0.9, with_floors: bool = True,
                     select_folds: int = selection.DEFAULT_FOLDS,
                     select_top: int = selection.DEFAULT_TOP) -> EvalResult:
    for dim in per_group:
        if dim not in GROUP_DIMS:
            from raysweep.errors import unknown_name

            raise unknown_name("--per-group dimension", dim, GROUP_DIMS)
    if split not in ("test", "val"):
        raise UserError(f"--split must be test or val, got {split!r}")
    check_replaceable(out)  # before minutes of work, not after: a refusal must cost nothing
    client = trials.client_for(tracking_uri)
    uri = tracking_uri or default_tracking_uri()
    exp_id, parent, label = trials.resolve_sweep(client, None, experiment, parent_run)
    runs = trials.runs_frame(client, exp_id, parent)
    picked = pick_leaders(runs, top_k, per_group)
    if picked.empty:
        raise UserError(f"no FINISHED trial with a {trials.METRIC} in {label}",
                        fix="wait for the sweep to finish, or check it with "
                            "`python -m raysweep.summarize`")
    study = retry(client.get_experiment, exp_id).name
    from raysweep.train import checkpoint

    work = Path(tempfile.mkdtemp(prefix="raysweep-eval-"))
    try:
        leaders, loaded, eval_data, refused = [], {}, None, []
        from tqdm import tqdm

        for row in tqdm(list(picked.itertuples()), desc="leaders", unit="run", file=sys.stderr,
                        disable=len(picked) < 2):
            try:
                ckpt_dir = fetch_checkpoint(row.run_id, uri, work / row.run_id)
            except Exception as e:  # noqa: BLE001 - one missing artifact should not end it
                log.warning("run %s has no usable checkpoint artifact (%s): skipped", row.run_id, e)
                continue
            ld = Leader(row.run_id, row.trial_id, {k: getattr(row, k) for k in TRIAL_TAGS},
                        float(getattr(row, trials.METRIC)), row.parent_run_id, [row.why])
            ld.predictor = checkpoint.load(ckpt_dir, device="cpu")
            ld.checkpoint_dir = ckpt_dir
            meta, cfg = ld.predictor.meta, ld.predictor.cfg
            if isinstance(data, Prepared):
                d = data
            else:
                key = (meta.get("crop") or cfg.crop, int(meta.get("size") or cfg.image_size),
                       cfg.split_by, cfg.val_fraction, cfg.test_fraction, cfg.seed)
                if key not in loaded:
                    from raysweep.data.pipeline import load_prepared

                    src = data_source(client, ld.parent_run_id, meta, data)
                    loaded[key] = load_prepared(src, crop=key[0], size=key[1], split_by=key[2],
                                                val_fraction=key[3], test_fraction=key[4],
                                                seed=key[5])
                d = loaded[key]
            check_identity(d, meta, ld.run_id)
            ld.data = d
            sub = d.subset(d.indices(split))
            if eval_data is None:
                eval_data, base_data = sub, d
            elif not np.array_equal(sub.sample_id, eval_data.sample_id):
                raise UserError(f"run {ld.run_id} was evaluated on other photos than the first "
                                "leader (different split)", fix="evaluate one sweep at a time")
            ld.pred = ld.predictor.predict(sub)
            if not np.isfinite(ld.pred).all():
                # diverged weights: a NaN colour scores no error at all in a naive mean, so the
                # leader is refused here rather than ranked (it can never be champion)
                bad = int((~np.isfinite(ld.pred).all(axis=1)).sum())
                log.warning("run %s predicts non-finite Lab for %d of %d %s photos: refused as "
                            "a leader", ld.run_id, bad, len(ld.pred), split)
                refused.append(f"{ld.name} refused: non-finite predictions on {bad} of "
                               f"{len(ld.pred)} {split} photos")
                continue
            leaders.append(ld)
        if not leaders:
            raise UserError(f"none of the {len(picked)} leaders has a checkpoint artifact "
                            "with finite predictions", where="; ".join(refused) or None,
                            fix="check that the sweep logged `checkpoint/` (MLflow UI) and that "
                                "its trials did not diverge (lower lr, enable grad_clip)")
        leaders.sort(key=lambda ld: ld.val)
        preds = {ld.name: ld.pred for ld in leaders}
        kinds = {ld.name: "model" for ld in leaders}
        extra = {ld.name: {"run_id": ld.run_id, "val_de00_mean": ld.val, "why": ld.why[0],
                           **ld.tags} for ld in leaders}
        # the mean of the top-k leaders: a candidate scored on validation like any leader
        ens = _ensemble_candidate(leaders, top_k, split, eval_data, work)
        if ens is not None:
            preds[ens.name], kinds[ens.name] = ens.pred, "ensemble"
            extra[ens.name] = {"run_id": ens.run_id, "val_de00_mean": ens.val, "why": ens.why[0]}
            refused += ens.why[1:]
        bdata = _baseline_data(base_data, data, leaders[0], client)
        b_train = bdata.subset(bdata.indices("train"))
        b_eval = bdata.subset(bdata.indices(split))
        bpred, skipped = baselines.run_baselines(b_train, b_eval, baseline_names)
        if not np.array_equal(b_eval.sample_id, eval_data.sample_id):
            raise UserError("baseline data rows differ from the models' rows")
        for name, p in bpred.items():
            preds[f"baseline:{name}"], kinds[f"baseline:{name}"] = p, "baseline"
        # the floors: how low the error could go, each with what it knows (synthetic data only)
        fl = floors.run_floors(eval_data) if with_floors else floors.Floors()
        for name, p in fl.preds.items():
            preds[name], kinds[name] = p, "floor"
        skipped.update(fl.skipped)
        summary, errs = score(preds, kinds, eval_data.target, extra, n_boot, seed)
        b = summary[summary["kind"] == "baseline"].sort_values("mean")
        best_base = b["model"].iloc[0] if len(b) else None
        table = breakdowns.breakdown(errs, eval_data, n_boot=max(200, n_boot // 4), seed=seed)
        champion = leaders[0]
        # few validation sessions select noise: re-score the top leaders across sessions
        why = selection.why_rescore(champion.data) if select_folds > 1 else None
        sel = selection.rescore(leaders, why, select_folds, select_top, seed) if why else None
        if sel is not None:
            champion = leaders[sel.champion]
            log.info("selection across sessions: %s crowned (%s)", champion.name, sel.stability)
        chosen = f"chosen by validation dE00 {champion.val:.3f}" if sel is None else (
            "chosen by grouped k-fold over sessions (mean validation dE00 "
            f"{sel.table.set_index('leader').loc[champion.name, 'cv_mean']:.3f}; its own "
            f"validation dE00 {champion.val:.3f})")
        if ens is not None and ens.val < min(ld.val for ld in leaders):
            # best on validation (even when fold re-scoring crowned a leader: the mean of the
            # top leaders is one more candidate, not one more draw among noisy single runs)
            champion, chosen = ens, (f"chosen by validation dE00 {ens.val:.3f}, below the best "
                                     f"single leader's {leaders[0].val:.3f}; the mean of "
                                     f"{', '.join(ens.predictor.names)}")
        comp = comparisons(leaders, errs, best_base, n_boot, seed, champion=champion.name)
        # the champion's error bound: calibrated on validation, its coverage checked on `split`
        info = {"champion_run": champion.run_id, "split_id": eval_data.info.get("split_id")}
        cal, trust, trust_note = coverage.champion_trust(
            champion.predictor, champion.data, split, level, max(200, n_boot // 4), seed,
            info=info)
        inp = report.ReportInput(
            title=f"Winners of {label} on the {split} split", champion=champion.name,
            summary=summary, breakdown=table, comparisons=comp, target=eval_data.target,
            preds=preds, errors=errs,
            context={"study": study, "sweep": label, "split": f"{split} ({len(eval_data)} "
                     f"photos, split id {eval_data.info.get('split_id')})",
                     "dataset": f"{eval_data.info.get('card')} (content hash "
                                f"{eval_data.info.get('content_hash')})",
                     "champion": f"{champion.name}, {chosen}",
                     "intervals": f"percentile bootstrap, {n_boot} resamples, seed {seed}"},
            notes=[f"{k} skipped: {v}" for k, v in skipped.items()] + refused
            + [trust_note] * bool(trust_note), trust=trust, floors=fl.knows, selection=sel)
        predictions = predictions_frame(eval_data, preds, kinds, errs)
        if cal is not None:  # stored with the champion: registration and predict carry it
            bounds.write(cal, champion.checkpoint_dir)
        out_dir = _write_outputs(Path(out), inp, summary, table, comp, predictions, cal)
        result = EvalResult(out_dir, champion.name, summary, table, comp, predictions,
                            coverage=None if trust is None else trust.table)
        if log_run:
            _log_to_mlflow(result, client, uri, exp_id, champion, leaders, split, study,
                           register)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ensemble_candidate(leaders: list[Leader], top_k: int, split: str, eval_data: Prepared,
                        work: Path) -> Leader | None:
    """`ensemble:topK` as a Leader (its folder of member checkpoints in `work`), or None."""
    cand = ensemble_candidate.candidate(leaders, top_k)
    if cand is None:
        return None
    sub = cand.data.subset(cand.data.indices(split))
    if not np.array_equal(sub.sample_id, eval_data.sample_id):
        raise UserError("the ensemble's rows differ from the leaders' rows")
    folder = serve_ensemble.save(work / "ensemble", [ld.checkpoint_dir for ld in cand.members],
                           [ld.name for ld in cand.members], cand.predictor.info)
    ld = Leader(",".join(m.run_id for m in cand.members), cand.name, {}, cand.val,
                cand.members[0].parent_run_id,
                [f"mean of top {len(cand.members)}"] + cand.left_out, cand.predictor, folder,
                cand.predictor.predict(sub), cand.data, label=cand.name)
    return ld


def _baseline_data(base: Prepared, given, champion: Leader, client) -> Prepared:
    """The champion's data, re-cut with background context when it has none (bg_reference)."""
    crop = str(base.info.get("crop") or "")
    if base.images is None or crop.endswith("_bg") or isinstance(given, Prepared):
        return base
    from raysweep.data.pipeline import load_prepared

    cfg = champion.predictor.cfg
    src = data_source(client, champion.parent_run_id, champion.predictor.meta, given)
    return load_prepared(src, crop="adaptive_bg", size=int(base.info.get("size") or 64),
                         split_by=cfg.split_by, val_fraction=cfg.val_fraction,
                         test_fraction=cfg.test_fraction, seed=cfg.seed)


def _write_outputs(out: Path, inp, summary, table, comp, predictions, cal=None) -> Path:
    """Everything into a temp folder beside `out`, then renamed into place in one step."""
    with atomic_dir(out) as tmp:
        report.render(inp, tmp)
        if cal is not None:
            bounds.write(cal, tmp)
        if inp.trust is not None:
            coverage.write_files(inp.trust, tmp)
        summary.to_csv(tmp / "summary.csv", index=False)
        table.to_csv(tmp / "breakdown.csv", index=False)
        comp.to_csv(tmp / "comparisons.csv", index=False)
        predictions.to_csv(tmp / "predictions.csv", index=False, float_format="%.4f")
    return out.resolve()


def _log_to_mlflow(result: EvalResult, client, uri: str, exp_id: str, champion: Leader,
                   leaders: list[Leader], split: str, study: str, register: bool) -> None:
    """An evaluation run (linked to the sweep's parent) holding the report; the champion
    registered as a pyfunc model with alias `champion`."""
    tracker = Tracker(study, f"eval-{split}", uri=uri)
    parents = sorted({ld.parent_run_id for ld in leaders if ld.parent_run_id})
    run = retry(client.create_run, exp_id, run_name=f"eval-{split}-{time.strftime('%Y%m%d-%H%M%S')}",
                tags={"raysweep.role": "evaluation", "raysweep.split": split,
                      "raysweep.parent_run": champion.parent_run_id,
                      "raysweep.parent_runs": ",".join(parents),
                      "raysweep.champion_run": champion.run_id})
    rid = run.info.run_id
    s = result.summary.set_index("model")
    metrics = {f"{split}_de00_{k}": float(s.loc[champion.name, k]) for k in
               ("mean", "mean_lo", "mean_hi", "median", "p95")}
    metrics[f"{split}_de76_mean"] = float(s.loc[champion.name, "de76_mean"])
    if result.coverage is not None:  # the bound's coverage and sharpness, overall
        overall = result.coverage.iloc[0]
        metrics[f"{split}_bound_coverage"] = float(overall["coverage"])
        metrics[f"{split}_bound_median"] = float(overall["median_bound"])
    for name, row in s[s["kind"].isin(["baseline", "floor"])].iterrows():
        metrics[f"{name.replace(':', '_')}_de00_mean"] = float(row["mean"])
    tracker.log(rid, metrics=metrics)
    tracker.log_artifacts(rid, str(result.out_dir), "report")
    result.eval_run_id = rid
    if not register:
        tracker.end(rid)
        return
    from raysweep.serve.pyfunc import register_champion

    try:
        result.model_uri = register_champion(champion.checkpoint_dir, registry_name(study), rid,
                                             uri, scores=metrics)
    finally:
        tracker.end(rid)
    log.info("registered the champion as %s", result.model_uri)
