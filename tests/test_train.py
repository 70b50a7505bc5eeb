"""The one training loop: learning, checkpoints, resume, faults, and DDP / Tune under Ray."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raysweep import _compat
from raysweep.color import delta_e00
from raysweep.config import DIVERGED, SELECT_METRIC, TrainConfig
from raysweep.errors import UserError
from raysweep.models import build_model
from raysweep.models.inputs import encode, fit_stats
from raysweep.train import checkpoint, predictor
from raysweep.train.loop import (
    LocalReporter,
    NonFiniteLoss,
    augment,
    device_tensors,
    fit,
    seed_everything,
    shard,
)
from raysweep.train.losses import Loss
from raysweep.train.reporters import wait_until_empty
from tests.helpers.fakes import make_prepared
from tests.helpers.faults import killed_once_loop

REPO = Path(__file__).resolve().parents[1]
METRICS = ("epoch", "train_loss", "val_de00_mean", "val_de00_median", "val_de00_p95", "epoch_s",
           "samples_per_s")


def tiny_cfg(**kw) -> TrainConfig:
    base = dict(backbone="tinycnn", fusion="concat", features="image+mean+meta", image_size=16,
                width=16, epochs=4, batch_size=16, lr=3e-3, warmup_epochs=0.5, dropout=0.0)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def data():
    return make_prepared(n=64, size=16, seed=0)


def test_fit_learns_and_reports_every_metric(data):
    result = fit(tiny_cfg(epochs=8), data)
    assert [h["epoch"] for h in result.history] == list(range(1, 9))
    for h in result.history:
        assert all(k in h and np.isfinite(h[k]) for k in METRICS)
        assert h["val_de00_median"] <= h["val_de00_p95"]
        assert h["samples_per_s"] > 0
    first, best = result.history[0], result.best
    assert best["val_de00_mean"] == min(h["val_de00_mean"] for h in result.history)
    assert best["val_de00_mean"] < 0.8 * first["val_de00_mean"]
    assert result.history[-1]["train_loss"] < 0.8 * first["train_loss"]


def test_one_epoch_lowers_the_training_loss(data):
    cfg = tiny_cfg(epochs=1, augment=False)
    stats = fit_stats(data, cfg)
    batch = encode(data, stats, cfg)
    train = torch.as_tensor(data.indices("train"))
    seed_everything(cfg.seed)
    initial = build_model(cfg, stats).eval()  # the loop builds the same initial model

    def loss(model):
        with torch.no_grad():
            pred = model({k: v[train] for k, v in batch.items()})
            return float(Loss(cfg)(pred, batch["target"][train], 0)[0])

    trained = fit(cfg, data).model.eval()
    assert loss(trained) < loss(initial) - 0.5


def test_checkpoint_restores_identical_predictions(data, tmp_path):
    result = fit(tiny_cfg(epochs=3), data, checkpoint_dir=str(tmp_path / "best"))
    assert result.checkpoint_dir == str(tmp_path / "best")
    meta = json.loads((tmp_path / "best" / "checkpoint.json").read_text())
    assert meta["split_id"] == data.info["split_id"]
    assert meta["content_hash"] == data.info["content_hash"]
    assert meta["epoch"] == result.best["epoch"] and meta["stats"]["cameras"]

    loaded = predictor.load(tmp_path / "best", device="cpu")
    lab = loaded.predict(data)
    assert lab.shape == (len(data), 3) and lab.dtype == np.float32
    assert np.array_equal(lab, predictor.load(tmp_path / "best").predict(data))
    val = data.indices("val")
    de = delta_e00(torch.from_numpy(lab[val]), torch.from_numpy(data.target[val]))
    assert float(de.mean()) == pytest.approx(result.best["val_de00_mean"], rel=1e-5)

    # The final model written and read back predicts bit for bit the same.
    cfg = tiny_cfg(epochs=3)
    stats = fit_stats(data, cfg)
    checkpoint.save(tmp_path / "final", result.model, cfg, stats, data.info, 3, {})
    direct = predictor.predict_batch(result.model, encode(data, stats, cfg),
                                     torch.arange(len(data)))
    assert np.array_equal(direct.numpy(), predictor.load(tmp_path / "final").predict(data))

    other_size = make_prepared(n=12, size=24, seed=0)
    with pytest.raises(UserError, match="16 px"):
        loaded.predict(other_size)


class Crash(Exception):
    pass


class CrashingReporter(LocalReporter):
    """Dies (in-process) right after reporting epoch `at`."""

    def __init__(self, at: int, **kw):
        super().__init__(**kw)
        self.at = at

    def report(self, metrics, save=None):
        super().report(metrics, save)
        if metrics["epoch"] == self.at:
            raise Crash


def test_resume_repeats_the_uninterrupted_run(data, tmp_path):
    cfg = tiny_cfg(epochs=6, dropout=0.1)
    full = fit(cfg, data).history
    with pytest.raises(Crash):
        fit(cfg, data, reporter=CrashingReporter(4, checkpoint_dir=str(tmp_path / "ck")))
    saved = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())["epoch"]
    resumed = fit(cfg, data, reporter=LocalReporter(resume_from=str(tmp_path / "ck"))).history
    assert [h["epoch"] for h in resumed] == list(range(saved + 1, 7))
    for a, b in zip(full[saved:], resumed):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["val_de00_mean"] == pytest.approx(a["val_de00_mean"], rel=1e-5)
        assert b["lr"] == pytest.approx(a["lr"])


def test_non_finite_loss_is_a_clear_error():
    bad = make_prepared(n=32, size=16, seed=4)
    bad.target[bad.indices("train")] = np.nan
    with pytest.raises(NonFiniteLoss, match=r"epoch 1, batch 0"):
        fit(tiny_cfg(epochs=2), bad)


def test_data_that_does_not_match_the_config_is_refused(data):
    with pytest.raises(UserError, match="image_size"):
        fit(tiny_cfg(image_size=32), data)
    no_val = make_prepared(n=20, size=16, seed=5)
    no_val.split[no_val.split == "val"] = "train"
    with pytest.raises(UserError, match="validation split is empty"):
        fit(tiny_cfg(), no_val)


def test_tabular_preset_trains():
    result = fit(tiny_cfg(features="mean+meta", fusion="none", epochs=3),
                 make_prepared(n=40, tabular=True, seed=6))
    assert len(result.history) == 3 and np.isfinite(result.best["val_de00_mean"])


def test_augment_keeps_every_colour():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    out = augment(images, gen)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert not torch.equal(out, images)
    for a, b in zip(images, out):  # the same multiset of pixels per image and channel
        assert torch.equal(a.flatten(1).sort(1).values, b.flatten(1).sort(1).values)


def test_shards_partition_the_epoch():
    order = torch.randperm(23)
    parts = [shard(order, r, 3) for r in range(3)]
    assert len({len(p) for p in parts}) == 1
    assert set(torch.cat(parts).tolist()) == set(range(23))
    assert len(torch.cat(parts)) - 23 < 3  # padding only to equalise


def test_encoded_data_is_cached_per_process(data):
    cfg = tiny_cfg()
    stats = fit_stats(data, cfg)
    a = device_tensors(data, stats, cfg, torch.device("cpu"))
    assert device_tensors(data, stats, cfg, torch.device("cpu")) is a
    other = make_prepared(n=64, size=16, seed=9)
    assert device_tensors(other, fit_stats(other, cfg), cfg, torch.device("cpu")) is not a


FAULT_SCRIPT = """
import sys
from raysweep.train.loop import fit, LocalReporter
from raysweep.config import TrainConfig
from tests.helpers.fakes import make_prepared
from tests.helpers.faults import KillOnce
cfg = TrainConfig(backbone="tinycnn", image_size=16, width=8, epochs=3, batch_size=16)
r = fit(cfg, make_prepared(n=32, size=16), reporter=KillOnce(LocalReporter(sys.argv[1]), 2))
print("EPOCHS", [h["epoch"] for h in r.history])
"""


@pytest.mark.slow  # measured above 15 s in `make test-fast` on 2 shared cores
def test_fault_injection_kills_once_per_trial(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = [sys.executable, "-c", FAULT_SCRIPT, str(tmp_path / "ck")]
    first = subprocess.run(run, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == -9, first.stderr  # SIGKILL at the start of epoch 2
    assert (tmp_path / "ck.raysweep_fault_epoch2.marker").exists()
    second = subprocess.run(run, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "EPOCHS [1, 2, 3]" in second.stdout


# ---- under Ray -----------------------------------------------------------------------------------

def _ddp_worker(config):
    """Runs the real loop, then saves this rank's parameters for the test to compare."""
    import ray.train

    from raysweep.train.loop import fit as fit_
    result = fit_(TrainConfig.from_dict(config["train"]), config["data"])
    rank = ray.train.get_context().get_world_rank()
    # Parameters, not buffers: BatchNorm running stats are per rank after the last step (DDP
    # broadcasts rank 0's at each forward; the checkpoint and validation use rank 0's).
    state = {k: v.detach().cpu() for k, v in result.model.named_parameters()}
    torch.save(state, os.path.join(config["out"], f"rank{rank}.pt"))


@pytest.mark.slow
@pytest.mark.cluster
def test_ddp_two_cpu_workers_keep_parameters_identical(ray_local, data, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = tiny_cfg(epochs=2, device="cpu")
    trainer = TorchTrainer(
        _ddp_worker,
        train_loop_config={"train": cfg.to_dict(), "data": ray_local.put(data),
                           "out": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
        run_config=RunConfig(storage_path=str(tmp_path / "storage"), name="ddp"),
    )
    result = trainer.fit()
    assert result.metrics["epoch"] == 2 and np.isfinite(result.metrics["val_de00_mean"])
    assert result.checkpoint is not None
    with result.checkpoint.as_directory() as d:
        assert (Path(d) / "model.pt").exists() and (Path(d) / "checkpoint.json").exists()
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    start = dict(build_model(cfg, fit_stats(data, cfg)).named_parameters())
    assert any(not torch.equal(start[k], r0[k]) for k in r0)  # it did train


class _LoggedLoop:
    """THE loop, with a line per start and per return of each rank (a callable object: Ray
    hands the loop only its config, and the log's path is the test's)."""

    def __init__(self, log: str):
        self.log = log

    def __call__(self, config):
        import ray.train

        from raysweep.train.loop import train_loop_per_worker
        rank = ray.train.get_context().get_world_rank()
        with open(self.log, "a") as f:
            f.write(f"start{rank}\n")
        train_loop_per_worker(config)
        # The loop returns only once Ray took its last report (TrainReporter.close): a report
        # still queued when the rank ends can be lost, and with it the run's last result.
        unread = "" if _compat.train_report_queue().empty() else "-with-a-report-unread"
        with open(self.log, "a") as f:
            f.write(f"end{rank}{unread}\n")


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.parametrize("how", ["training loss on every rank", "validation on rank 0 only"])
def test_a_diverged_ddp_trial_ends_with_a_last_result_not_a_retry(ray_local, tmp_path, how):
    """A sweep's DDP trial (sweep.trainable.run_ddp_trial: 2 gloo workers on the CPU) whose
    weights diverge: every rank stops in the same epoch and the reason is the trial's last result
    (config.DIVERGED), as in a single-worker trial. Raised, it would be retried (Train's and
    Tune's max_failures=1) from the last checkpoint, where it diverges again. Only rank 0
    validates, so it alone sees a NaN validation target."""
    from ray import tune

    from raysweep.sweep.resources import Plan
    from raysweep.sweep.trainable import run_ddp_trial, variant_key

    data = make_prepared(n=48, size=16, seed=10)
    # NaN targets: every training row's (each rank's loss), or one validation row's (rank 0's)
    rows = data.indices("train") if how.startswith("training") else data.indices("val")[:1]
    data.target[rows] = np.nan
    cfg = tiny_cfg(aux_loss="none", epochs=4, device="cpu")
    log = tmp_path / "ranks.log"
    plan = Plan(workers=2, cpus_per_worker=1, gpus_per_worker=0, max_concurrent=1,
                cluster_cpus=8, cluster_gpus=0, local=True)
    trial = tune.with_parameters(run_ddp_trial, plan=plan, loop=_LoggedLoop(str(log)),
                                 data={variant_key(cfg.crop, cfg.image_size): ray_local.put(data)},
                                 storage=str(tmp_path / "train"), max_failures=1)
    result = tune.Tuner(
        tune.with_resources(trial, plan.trial_resources()), param_space=cfg.to_dict(),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="ddp",
                                  failure_config=tune.FailureConfig(max_failures=1)),
    ).fit()[0]
    assert result.error is None
    last = result.metrics
    assert last[DIVERGED].startswith("NonFiniteLoss: non-finite "), last
    assert ("validation" if how.startswith("validation") else "training loss at epoch 1, batch 0"
            ) in last[DIVERGED]  # rank 0's reason
    assert math.isnan(last[SELECT_METRIC]) and last["epoch"] < 4
    # one start per rank (neither Train nor Tune retried), and both ranks returned
    assert sorted(log.read_text().split()) == ["end0", "end1", "start0", "start1"]


class _ReportQueue:
    """ray.util.queue.Queue's get_nowait / put, in memory."""

    def __init__(self):
        self.items = []

    def put(self, item):
        self.items.append(item)

    def get_nowait(self):
        from ray.util.queue import Empty

        if not self.items:
            raise Empty
        return self.items.pop(0)


def test_a_ddp_trial_forwards_every_train_report_before_it_ends():
    """sweep.trainable.fit_forwarding: Train's reports reach Tune from the trial's own thread, in
    order, the last one included, even when fit() returns right after putting it (Ray's own
    hand-over lost it, or hung, when Tune's end-of-trial marker overtook it)."""
    import threading

    from raysweep.sweep.trainable import fit_forwarding

    reports, got, trial_thread = _ReportQueue(), [], threading.current_thread()

    def fit():  # three epochs, the last put the instant before fit() returns
        for epoch in (1, 2, 3):
            reports.put({"epoch": epoch, DIVERGED: "NonFiniteLoss" if epoch == 3 else ""})

    def report(metrics):
        assert threading.current_thread() is trial_thread  # never Train's thread
        got.append(metrics["epoch"])

    fit_forwarding(fit, reports, report, poll_s=0.01)
    assert got == [1, 2, 3] and not reports.items

    def crash():
        reports.put({"epoch": 1})
        raise RuntimeError("worker group failed")

    got.clear()
    with pytest.raises(RuntimeError, match="worker group failed"):
        fit_forwarding(crash, reports, report, poll_s=0.01)
    assert got == [1]  # what Train reported before the error still reached Tune


def _three_checkpoints(config):
    import tempfile

    import ray.train

    for epoch in (1, 2, 3):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "model.pt").write_text(f"weights of epoch {epoch}")
            ray.train.report({"epoch": epoch},
                             checkpoint=ray.train.Checkpoint.from_directory(d))


@pytest.mark.slow
@pytest.mark.cluster
def test_a_checkpoint_train_deleted_is_replaced_by_the_one_it_kept(ray_local, tmp_path):
    """A DDP trial's Train run keeps one checkpoint: the one Tune was told of may be gone by the
    time the sweep tags or copies it (ASHA stopped the trial, its workers ran on)."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raysweep.train.transfer import surviving_checkpoint

    result = TorchTrainer(_three_checkpoints, scaling_config=ScalingConfig(num_workers=1),
                          run_config=RunConfig(storage_path=str(tmp_path), name="ddp",
                                               checkpoint_config=CheckpointConfig(num_to_keep=1))
                          ).fit()
    kept = result.checkpoint.path
    assert (Path(kept) / "model.pt").read_text() == "weights of epoch 3"
    assert len([p for p in (tmp_path / "ddp").glob("checkpoint_*") if p.is_dir()]) == 1  # 1, 2 gone
    gone = str(tmp_path / "ddp" / "checkpoint_of_epoch_1")
    assert surviving_checkpoint(gone, None) == kept
    assert surviving_checkpoint(kept, None) == kept
    elsewhere = str(tmp_path / "not_a_train_run" / "checkpoint_x")
    assert surviving_checkpoint(elsewhere, None) == elsewhere


def _faulty_trial(config):
    import ray.tune

    with open(config["log"], "a") as f:  # one line per start of the trial process
        f.write(f"resume={ray.tune.get_checkpoint() is not None}\n")
    killed_once_loop(config)


@pytest.mark.slow
@pytest.mark.cluster
def test_tune_trial_crashes_once_and_resumes(ray_local, data, tmp_path):
    from ray import tune

    cfg = tiny_cfg(epochs=3)
    log = tmp_path / "starts.log"
    tuner = tune.Tuner(
        tune.with_resources(_faulty_trial, {"cpu": 1}),
        param_space={"train": cfg.to_dict(), "data": ray_local.put(data), "log": str(log)},
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="faulty",
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    result = tuner.fit()[0]
    assert result.error is None
    assert result.metrics["epoch"] == 3 and np.isfinite(result.metrics["val_de00_mean"])
    # Killed at epoch 2 once, restarted from the epoch-1 checkpoint, not killed again.
    assert log.read_text().split() == ["resume=False", "resume=True"]
    assert result.checkpoint is not None
    with result.checkpoint.as_directory() as d:
        assert json.loads((Path(d) / "checkpoint.json").read_text())["epoch"] >= 1


def test_a_diverged_model_is_never_checkpointed_or_ranked(tmp_path):
    # lr=1e12 without clipping and without an auxiliary loss blows the weights up; before the
    # fix the dE00 of NaN predictions was 0, so this trial "improved" and was checkpointed.
    data = make_prepared(n=48, size=16, seed=9)
    with pytest.raises(NonFiniteLoss):
        fit(tiny_cfg(lr=1e12, aux_loss="none", grad_clip=0.0, epochs=3), data,
            checkpoint_dir=str(tmp_path / "ckpt"))
    for meta in tmp_path.rglob("checkpoint.json"):
        metrics = json.loads(meta.read_text())["metrics"]
        assert math.isfinite(metrics["val_de00_mean"]) and metrics["val_de00_mean"] > 0


class DivergedReporter(LocalReporter):
    """A Tune trial's way with divergence (TuneReporter): the reason as a last result, no raise."""

    def diverged(self, error, metrics):
        self.report({**metrics, DIVERGED: f"{type(error).__name__}: {error}"})

    def close(self):
        self.history.append("closed")


def test_a_reporter_may_end_a_diverged_run_with_a_last_result_instead_of_raising():
    data = make_prepared(n=48, size=16, seed=9)
    reporter = DivergedReporter()
    out = fit(tiny_cfg(lr=1e12, aux_loss="none", grad_clip=0.0, epochs=4), data, reporter=reporter)
    assert reporter.history.pop() == "closed"  # after the last report (TrainReporter.close)
    last = reporter.history[-1]  # no epoch after it: the run stopped there
    assert last[DIVERGED].startswith("NonFiniteLoss: non-finite") and math.isnan(last[SELECT_METRIC])
    assert last["epoch"] == len(reporter.history) < 4
    assert all(DIVERGED not in h for h in reporter.history[:-1])
    assert len(out.history) == len(reporter.history) - 1
    with pytest.raises(NonFiniteLoss):  # a plain run (LocalReporter) still raises
        fit(tiny_cfg(lr=1e12, aux_loss="none", grad_clip=0.0, epochs=4), data)


class _SlowlyPolledQueue:
    """A Train worker's report queue whose report the controller's poll takes at the third look."""

    def __init__(self):
        self.looks = 0

    def empty(self):
        self.looks += 1
        return self.looks >= 3


def test_a_train_rank_returns_only_once_its_last_report_was_taken():
    q = _SlowlyPolledQueue()
    assert wait_until_empty(q, timeout_s=60, poll_s=0) and q.looks == 3
    never = _SlowlyPolledQueue()
    never.empty = lambda: False  # a controller that stopped polling: the wait ends, unflushed
    assert wait_until_empty(never, timeout_s=0, poll_s=0) is False


def test_non_finite_validation_predictions_end_the_trial():
    data = make_prepared(n=48, size=16, seed=10)
    data.target[data.indices("val")[:1]] = np.nan  # training rows stay clean: the loss is finite
    with pytest.raises(NonFiniteLoss, match="validation"):
        fit(tiny_cfg(aux_loss="none", epochs=2), data)
