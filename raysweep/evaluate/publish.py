"""Stage 6 of eval_winners: the report folder, the evaluation run in MLflow, the champion
registered as a pyfunc model NAME@champion.

A champion that eval_winners built itself (an ensemble folder, a gradient-boosting family) lives
in its temporary work folder: the report folder keeps a copy (`MODEL_DIR`), so that `predict
--model <out>/champion` serves it with or without the registry."""

from __future__ import annotations

import logging
import math
import re
import shutil
import time
from pathlib import Path

from raysweep.evaluate import coverage, report, selection
from raysweep.evaluate.record import EvalResult, EvalRun
from raysweep.evaluate.scoring import predictions_frame
from raysweep.fsutil import atomic_dir
from raysweep.serve import bounds
from raysweep.tracking import datasets, importance
from raysweep.tracking.store import Tracker, retry

log = logging.getLogger("raysweep.eval_winners")
MODEL_DIR = "champion"


def publish(r: EvalRun) -> EvalResult:
    """The report and its tables written (atomically), then logged and registered."""
    s = r.settings
    champion, eval_data, split, n_boot, seed = r.champion, r.eval_data, s.split, s.n_boot, s.seed
    inp = report.ReportInput(
        title=f"Winners of {r.label} on the {split} split", champion=champion.name,
        summary=r.summary, breakdown=r.table, comparisons=r.comp, target=eval_data.target,
        preds=r.preds, errors=r.errs,
        context={"regime": selection.split_regime(champion.data, split),
                 "study": r.study, "sweep": r.label, "split": f"{split} ({len(eval_data)} "
                 f"photos, split id {eval_data.info.get('split_id')})",
                 "dataset": f"{eval_data.info.get('card')} (content hash "
                            f"{eval_data.info.get('content_hash')})",
                 "champion": f"{champion.name}, {r.chosen}",
                 "intervals": f"percentile bootstrap, {n_boot} resamples, seed {seed}"},
        notes=[f"{k} skipped: {v}" for k, v in r.skipped.items()] + r.refused
        + [r.trust_note] * bool(r.trust_note), trust=r.trust, floors=r.fl.knows, selection=r.sel,
        importance=importance.fetch(r.client, champion.parent_run_id, r.work / "importance"))
    predictions = predictions_frame(eval_data, r.preds, r.kinds, r.errs)
    if r.cal is not None and champion.checkpoint_dir is not None:  # registration carries it
        bounds.write(r.cal, champion.checkpoint_dir)
    built = champion.checkpoint_dir is not None and \
        Path(champion.checkpoint_dir).resolve().is_relative_to(Path(r.work).resolve())
    if built:  # a tabular dataset's champion reads spreadsheet rows, not photos
        given = ("PHOTO", "") if eval_data.images is not None else \
            ("SHEET.csv", ", SHEET.csv holding mean_L/a/b and the metadata columns")
        inp.context["model"] = (f"`{MODEL_DIR}/` in this folder (serve it with `python -m "
                                f"raysweep.predict {given[0]} --model <this folder>/{MODEL_DIR}`"
                                f"{given[1]})")
    out_dir = _write_outputs(Path(s.out), inp, r.summary, r.table, r.comp, predictions, r.cal,
                             champion.checkpoint_dir if built else None)
    result = EvalResult(out_dir, champion.name, r.summary, r.table, r.comp, predictions,
                        coverage=None if r.trust is None else r.trust.table,
                        regime=inp.context["regime"])
    if s.log_run:
        _log_to_mlflow(result, r)
    return result


def registry_name(study: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", study).strip("-") or "raysweep"


def _write_outputs(out: Path, inp, summary, table, comp, predictions, cal=None,
                   model_dir=None) -> Path:
    """Everything into a temp folder beside `out`, then renamed into place in one step."""
    with atomic_dir(out) as tmp:
        if model_dir is not None:
            shutil.copytree(model_dir, tmp / MODEL_DIR)
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


def _log_to_mlflow(result: EvalResult, r: EvalRun) -> None:
    """An evaluation run (linked to the sweep's parent) holding the report; the champion
    registered as a pyfunc model with alias `champion`."""
    client, uri, exp_id, champion, leaders = r.client, r.uri, r.exp_id, r.champion, r.leaders
    split, study, register = r.settings.split, r.study, r.settings.register
    tracker = Tracker(study, f"eval-{split}", uri=uri)
    parents = sorted({ld.parent_run_id for ld in leaders if ld.parent_run_id})
    run = retry(client.create_run, exp_id, run_name=f"eval-{split}-{time.strftime('%Y%m%d-%H%M%S')}",
                tags={"raysweep.role": "evaluation", "raysweep.split": split,
                      "raysweep.parent_run": champion.parent_run_id,
                      "raysweep.parent_runs": ",".join(parents),
                      "raysweep.champion_run": champion.run_id})
    rid = run.info.run_id
    datasets.log_input(tracker, rid, datasets.describe(r.base_data), datasets.EVALUATION)
    s = result.summary.set_index("model")
    metrics = {f"{split}_de00_{k}": float(s.loc[champion.name, k]) for k in
               ("mean", "mean_lo", "mean_hi", "median", "p95")}
    metrics[f"{split}_de76_mean"] = float(s.loc[champion.name, "de76_mean"])
    if result.coverage is not None:  # the bound's coverage and sharpness, overall
        overall = result.coverage.iloc[0]
        # an infinite bound means "too few calibration sessions for this level" (the report
        # says so): it is no score, so it is not logged as one
        for key, col in (("coverage", "coverage"), ("median", "median_bound")):
            if math.isfinite(float(overall[col])):
                metrics[f"{split}_bound_{key}"] = float(overall[col])
    for name, row in s[s["kind"].isin(["baseline", "floor", "reference"])].iterrows():
        metrics[f"{name.replace(':', '_')}_de00_mean"] = float(row["mean"])
    tracker.log(rid, metrics=metrics)
    tracker.log_artifacts(rid, str(result.out_dir), "report")
    result.eval_run_id = rid
    if not register or champion.checkpoint_dir is None:
        tracker.end(rid)
        return
    # lazy: serve.pyfunc imports MLflow's model API (seconds); `eval_winners --help` starts without it
    from raysweep.serve.pyfunc import register_champion

    try:
        # the registry refuses a model whose own errors are non-finite; the baselines' scores
        # and the bound are context, not the model's
        own = {k: v for k, v in metrics.items() if k.startswith(f"{split}_de")}
        result.model_uri = register_champion(champion.checkpoint_dir, registry_name(study), rid,
                                             uri, scores=own)
    finally:
        tracker.end(rid)
    log.info("registered the champion as %s", result.model_uri)
