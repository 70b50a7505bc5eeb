"""Stages 2 and 3 of eval_winners: the candidates beside the leaders (the `ensemble:topK` mean),
then every model, baseline and floor scored on the same photos."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from raysweep.data.pipeline import load_prepared
from raysweep.data.prepared import Prepared, SplitSettings
from raysweep.errors import UserError
from raysweep.evaluate import baselines, breakdowns, ensemble_candidate, floors, stats
from raysweep.evaluate.leaders import Leader, data_source
from raysweep.evaluate.record import EvalRun
from raysweep.serve import ensemble as serve_ensemble


def add_candidates(r: EvalRun) -> None:
    """The leaders' predictions, plus the mean of the top-k leaders: a candidate scored on
    validation like any leader."""
    s = r.settings
    leaders = r.leaders
    r.preds = {ld.name: ld.pred for ld in leaders}
    r.kinds = {ld.name: "model" for ld in leaders}
    r.extra = {ld.name: {"run_id": ld.run_id, "val_de00_mean": ld.val, "why": ld.why[0],
                         **ld.tags} for ld in leaders}
    ens = _ensemble_candidate(leaders, s.top_k, s.split, r.eval_data, r.work)
    if ens is not None:
        r.preds[ens.name], r.kinds[ens.name] = ens.pred, "ensemble"
        r.extra[ens.name] = {"run_id": ens.run_id, "val_de00_mean": ens.val, "why": ens.why[0]}
        r.refused += ens.why[1:]
    r.ens = ens


def score_candidates(r: EvalRun) -> None:
    """Baselines and floors beside the candidates; all scored, with breakdowns."""
    s = r.settings
    preds, kinds, eval_data, split = r.preds, r.kinds, r.eval_data, s.split
    bdata = _baseline_data(r.base_data, s.data, r.leaders[0], r.client)
    b_train = bdata.subset(bdata.indices("train"))
    b_eval = bdata.subset(bdata.indices(split))
    fitted, skipped = baselines.fit_baselines(b_train, b_eval, s.baseline_names)
    bpred = {n: np.asarray(m.predict(b_eval), np.float64) for n, m in fitted.items()}
    if not np.array_equal(b_eval.sample_id, eval_data.sample_id):
        raise UserError("baseline data rows differ from the models' rows")
    for name, p in bpred.items():
        preds[f"baseline:{name}"], kinds[f"baseline:{name}"] = p, "baseline"
    # the floors: how low the error could go, each with what it knows (synthetic data only)
    fl = floors.run_floors(eval_data) if s.with_floors else floors.Floors()
    for name, p in fl.preds.items():
        preds[name], kinds[name] = p, fl.kinds.get(name, "floor")
    skipped.update(fl.skipped)
    summary, errs = score(preds, kinds, eval_data.target, r.extra, s.n_boot, s.seed)
    r.best_base = best_baseline(bdata, fitted)
    r.table = breakdowns.breakdown(errs, eval_data, n_boot=max(200, s.n_boot // 4), seed=s.seed)
    r.skipped, r.fl, r.summary, r.errs = skipped, fl, summary, errs


def best_baseline(bdata, fitted: dict) -> str | None:
    """The baseline with the lowest mean dE00 on VALIDATION: the test split picks nothing, not
    even the yardstick the champion is compared with. `fitted`: the baselines already fitted on
    the training split (each fitted once, scored on both splits)."""
    val = bdata.subset(bdata.indices("val"))
    if not len(val) or not fitted:
        return None
    means = {}
    for n, m in fitted.items():
        why = m.why_not(bdata.subset(bdata.indices("train")), val) \
            if hasattr(m, "why_not") else None
        if not why:
            means[n] = float(stats.errors_of(m.predict(val), val.target)[0].mean())
    return f"baseline:{min(means, key=means.get)}" if means else None


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
    cfg = champion.predictor.cfg
    src = data_source(client, champion.parent_run_id, champion.predictor.meta, given)
    return load_prepared(src, crop="adaptive_bg", size=int(base.info.get("size") or 64),
                         split=SplitSettings.of(cfg))
