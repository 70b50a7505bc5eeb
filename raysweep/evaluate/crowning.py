"""Stages 4 and 5 of eval_winners: the champion crowned on validation only (or by grouped
k-fold over sessions), then its error bound calibrated on validation and checked on the split."""

from __future__ import annotations

import logging

from raysweep.evaluate import coverage, selection
from raysweep.evaluate.record import EvalRun
from raysweep.evaluate.scoring import comparisons

log = logging.getLogger("raysweep.eval_winners")


def crown(r: EvalRun) -> None:
    """The champion and why it was chosen; the study's questions as paired comparisons."""
    s = r.settings
    leaders, ens, seed = r.leaders, r.ens, s.seed
    champion = leaders[0]
    # few validation sessions select noise: re-score the top leaders across sessions
    why = selection.why_rescore(champion.data) if s.select_folds > 1 else None
    sel = selection.rescore(leaders, why, s.select_folds, s.select_top, seed) if why else None
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
    r.comp = comparisons(leaders, r.errs, r.best_base, s.n_boot, seed, champion=champion.name)
    r.champion, r.chosen, r.sel = champion, chosen, sel


def calibrate(r: EvalRun) -> None:
    """The champion's error bound: calibrated on validation, its coverage checked on `split`."""
    s = r.settings
    champion = r.champion
    info = {"champion_run": champion.run_id, "split_id": r.eval_data.info.get("split_id")}
    r.cal, r.trust, r.trust_note = coverage.champion_trust(
        champion.predictor, champion.data, s.split, s.level, max(200, s.n_boot // 4), s.seed,
        info=info)
