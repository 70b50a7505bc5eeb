"""THE training loop: used by search, evaluation, benchmarks and tests, on CPU, GPU or DDP.

`train_loop_per_worker(config)` is the Ray entry point; `fit(cfg, data)` the plain-Python one;
both run `_train`. Where results go is the reporter's business (raysweep.train.reporters), picked from
the Ray context, so the same code runs in a Tune trial process (single worker, no TorchTrainer
start) and in a Ray Train V2 TorchTrainer (DDP, each rank its own shard of the training split).

Speed on a small dataset comes from never waiting on the host: the encoded dataset is built once
per process (cached by content hash, crop, size and split), moved to the device whole, batches are
gathered there by index, augmentation (flips and small shifts, which leave every pixel's colour
unchanged) runs there too, and the loss is only read back once per epoch on a GPU.

A non-finite loss or validation score ends the run with NonFiniteLoss; under Ray (a Tune trial, or
all ranks of a DDP run, which agree on it in the same epoch) it is reported as the last result
instead of raised, so that neither Tune nor Train retries it (raysweep.config.DIVERGED).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from raysweep.color import delta_e00
from raysweep.config import SELECT_METRIC, TrainConfig
from raysweep.data.prepared import Prepared
from raysweep.errors import UserError
from raysweep.models import build_model
from raysweep.models.inputs import FeatureStats, encode, fit_stats, input_key
from raysweep.train import checkpoint as ckpt
from raysweep.train.losses import Loss, aux_weight
from raysweep.train.predictor import predict_batch
from raysweep.train.reporters import LocalReporter, Reporter, pick_reporter

MAX_CACHED = 2  # datasets (and their device copies) kept per process

__all__ = ["FitResult", "LocalReporter", "NonFiniteLoss", "fit", "train_loop_per_worker"]


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the trial cannot continue."""


@dataclass
class FitResult:
    best: dict
    history: list[dict] = field(default_factory=list)
    checkpoint_dir: str | None = None
    model: torch.nn.Module | None = None  # the final (not best) model, unwrapped from DDP


# ---- data: resolved once per process, kept whole on the device ---------------------------------

_DATA: OrderedDict = OrderedDict()
_TENSORS: OrderedDict = OrderedDict()


def _remember(cache: OrderedDict, key, value):
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > MAX_CACHED:
        cache.popitem(last=False)
    return value


def data_key(data: Prepared) -> tuple | None:
    info = data.info
    if not info.get("content_hash"):
        return None  # no identity: never cache (an id() could be reused by another object)
    return (info["content_hash"], info.get("crop"), info.get("size"), info.get("split_id"))


def resolve_data(data) -> Prepared:
    """A Prepared, or a Ray ObjectRef to one (fetched once per process)."""
    if isinstance(data, Prepared):
        return data
    import ray

    if isinstance(data, ray.ObjectRef):
        key = ("ref", data.hex())
        return _DATA[key] if key in _DATA else _remember(_DATA, key, ray.get(data))
    raise TypeError(f"config['data'] must be a Prepared or a Ray ObjectRef, got {type(data)}")


def device_tensors(data: Prepared, stats: FeatureStats, cfg: TrainConfig,
                   device: torch.device) -> dict[str, torch.Tensor]:
    dkey = data_key(data)
    key = None if dkey is None else (dkey, json.dumps(stats.to_dict(), sort_keys=True),
                                     *input_key(cfg), str(device))
    if key is not None and key in _TENSORS:
        return _TENSORS[key]
    tensors = {k: v.to(device) for k, v in encode(data, stats, cfg).items()}
    return tensors if key is None else _remember(_TENSORS, key, tensors)


def check_data(cfg: TrainConfig, data: Prepared) -> None:
    where = f"dataset {data.info.get('card', '?')}"
    if cfg.uses_image and data.images is not None:
        size = data.images.shape[-1]
        if size != cfg.image_size:
            raise UserError(f"the data holds {size} px crops but image_size={cfg.image_size}",
                            where=where, fix="prepare the data with size=image_size")
        if data.info.get("crop") and data.info["crop"] != cfg.crop:
            raise UserError(f"the data holds crop={data.info['crop']!r} but crop={cfg.crop!r}",
                            where=where, fix="prepare the data with the configured crop")
    if len(data.indices("val")) == 0:
        raise UserError("the validation split is empty, so there is nothing to select models on",
                        where=where, fix="set val_fraction > 0 or give val rows in the split column")


# ---- pieces of the loop ----------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global stream other code may use
    torch.manual_seed(seed)


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random flips and small cyclic shifts of uint8 images, on their device.

    A cyclic shift moves pixels without creating new values, so the colour content of each image
    is exactly preserved; the target therefore stays right.
    """
    b, _, h, w = images.shape
    dev = images.device
    flip = torch.rand(2, b, device=dev, generator=gen) < 0.5
    images = torch.where(flip[0, :, None, None, None], images.flip(3), images)
    images = torch.where(flip[1, :, None, None, None], images.flip(2), images)
    s = max(1, h // 16)
    dy, dx = torch.randint(-s, s + 1, (2, b), device=dev, generator=gen)
    rows = (torch.arange(h, device=dev)[None] - dy[:, None]) % h
    cols = (torch.arange(w, device=dev)[None] - dx[:, None]) % w
    bidx = torch.arange(b, device=dev)[:, None, None]
    out = images[bidx, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module, device: torch.device):
    # No weight decay on biases and norm scales (1-D parameters), as usual.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type == "cuda")


def make_scheduler(cfg: TrainConfig, optimizer, steps_per_epoch: int):
    """Linear warm-up, then cosine decay to zero, stepped per batch."""
    total = cfg.epochs * steps_per_epoch
    warm = round(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min((step - warm) / max(1, total - warm), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def shard(order: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank's share of a permutation; padded by wrapping so every rank runs the same step count
    (DDP all-reduces each backward, so unequal counts would hang)."""
    per_rank = math.ceil(len(order) / world)
    padded = order.repeat(math.ceil(per_rank * world / len(order)))[:per_rank * world]
    return padded[rank::world]


def validate(model, tensors, idx, autocast: bool) -> dict:
    pred = predict_batch(ckpt.unwrap(model), tensors, idx, autocast=autocast)
    de = delta_e00(pred, tensors["target"][idx].float())
    # A non-finite prediction is the worst possible answer, never a small one.
    de = torch.where(torch.isfinite(de), de, torch.full_like(de, math.inf))
    q = torch.quantile(de, torch.tensor([0.5, 0.95], device=de.device))
    mean, median, p95 = torch.stack((de.mean(), q[0], q[1])).tolist()
    return {"val_de00_mean": mean, "val_de00_median": median, "val_de00_p95": p95}


# ---- the loop: setup -> epochs -> result ------------------------------------------------------------

@dataclass
class _Run:
    """What the epochs need, built once by `_setup` (the same on every rank)."""

    cfg: TrainConfig
    reporter: Reporter
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    stats: FeatureStats
    tensors: dict[str, torch.Tensor]
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    steps_per_epoch: int
    info: dict
    start_epoch: int = 0
    best: dict | None = None
    loss_fn: Loss = None
    aug_gen: torch.Generator = None
    perm_gen: torch.Generator = field(default_factory=torch.Generator)

    @property
    def bf16(self) -> bool:
        return self.cfg.bf16 and self.device.type == "cuda"


def _setup(cfg: TrainConfig, data, reporter: Reporter) -> _Run:
    """Data on the device, the model (resumed if a checkpoint exists, prepared by the reporter),
    its optimizer and scheduler."""
    data = resolve_data(data)
    check_data(cfg, data)
    device = reporter.device(cfg)
    seed_everything(cfg.seed)  # same seed on every rank: identical initial weights

    stats = fit_stats(data, cfg)
    model = build_model(cfg, stats)
    train_idx = torch.as_tensor(data.indices("train"), device=device)
    per_rank = math.ceil(len(train_idx) / reporter.world_size)
    steps_per_epoch = max(1, math.ceil(per_rank / cfg.batch_size))
    train_state = None
    with reporter.resume() as path:
        if path:
            model.load_state_dict(torch.load(os.path.join(path, ckpt.MODEL_FILE),
                                             map_location="cpu", weights_only=True))
            train_state = ckpt.load_train_state(path)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    model = reporter.prepare(model, device)
    optimizer = make_optimizer(cfg, model, device)
    scheduler = make_scheduler(cfg, optimizer, steps_per_epoch)
    run = _Run(cfg, reporter, device, model, optimizer, scheduler, stats,
               tensors=device_tensors(data, stats, cfg, device), train_idx=train_idx,
               val_idx=torch.as_tensor(data.indices("val"), device=device),
               steps_per_epoch=steps_per_epoch, loss_fn=Loss(cfg),
               aug_gen=torch.Generator(device=device),
               info={**data.info,
                     "size": None if data.images is None else int(data.images.shape[-1])})
    if train_state is not None:
        optimizer.load_state_dict(train_state["optimizer"])
        scheduler.load_state_dict(train_state["scheduler"])
        run.start_epoch, run.best = int(train_state["epoch"]), train_state["best"]
    return run


def _train_one_epoch(run: _Run, epoch: int) -> tuple[torch.Tensor, int, NonFiniteLoss | None]:
    """One pass over this rank's shard: (this rank's mean training loss, samples seen, the
    NonFiniteLoss if its loss was not finite; `_agree` tells the other ranks)."""
    cfg, model, device = run.cfg, run.model, run.device
    rank, world = run.reporter.rank, run.reporter.world_size
    model.train()
    # Every random stream is re-seeded from (seed, epoch, rank) so that a resumed run repeats
    # the uninterrupted one exactly; the shuffle ignores the rank so that shards partition it.
    run.perm_gen.manual_seed(cfg.seed * 100_003 + epoch)
    run.aug_gen.manual_seed(cfg.seed * 100_003 + epoch * 101 + rank)
    torch.manual_seed(cfg.seed * 100_003 + epoch * 101 + rank + 7)  # dropout
    order = torch.randperm(len(run.train_idx), generator=run.perm_gen)
    mine = shard(order, rank, world).to(device)
    loss_sum = torch.zeros((), device=device)
    bad_batch = torch.full((), -1, device=device)
    seen = 0
    for step in range(run.steps_per_epoch):
        idx = run.train_idx[mine[step * cfg.batch_size:(step + 1) * cfg.batch_size]]
        if len(idx) < 2 and step > 0:
            break  # a batch of one breaks BatchNorm; the same on every rank
        batch = {k: v[idx] for k, v in run.tensors.items()}
        if cfg.augment and "image" in batch:
            batch["image"] = augment(batch["image"], run.aug_gen)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.bf16):
            pred = model(batch)
        loss, _ = run.loss_fn(pred, batch["target"], epoch + step / run.steps_per_epoch)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        run.optimizer.step()
        run.scheduler.step()
        loss = loss.detach()
        bad_batch = torch.where(~torch.isfinite(loss) & (bad_batch < 0), step, bad_batch)
        loss_sum += loss * len(idx)
        seen += len(idx)
        if device.type != "cuda" and world == 1 and bad_batch >= 0:
            # On the CPU checking costs nothing: stop at once. Not in DDP, where a rank that
            # left the epoch early would leave the others waiting in their next all-reduce.
            break
    bad = int(bad_batch)  # on a GPU the one device sync of the epoch (inside its timing)
    error = None if bad < 0 else NonFiniteLoss(
        f"non-finite training loss at epoch {epoch + 1}, batch {bad} (lr={cfg.lr:g}, "
        f"backbone={cfg.backbone}, fusion={cfg.fusion}); lower lr, enable grad_clip, or "
        "check the data for NaN targets")
    return loss_sum / max(seen, 1), seen, error


def _agree(run: _Run, train_loss: torch.Tensor, error: NonFiniteLoss | None,
           epoch: int) -> tuple[float, NonFiniteLoss | None]:
    """(The mean training loss over all ranks, the epoch's NonFiniteLoss if any rank has one).

    In DDP one all-reduce carries both, so that every rank stops in the same epoch: ranks check
    their own loss, only rank 0 validates, and a rank that stopped alone would leave the others
    waiting in their next collective (or have Train retry the run, diverging again)."""
    world = run.reporter.world_size
    if world == 1 or not torch.distributed.is_initialized():
        return float(train_loss), error
    both = torch.stack((train_loss.float(), torch.tensor(float(error is not None),
                                                         device=train_loss.device)))
    torch.distributed.all_reduce(both)
    loss, flagged = (both / world).tolist()
    if flagged > 0 and error is None:
        cfg = run.cfg
        error = NonFiniteLoss(f"non-finite loss or validation predictions on another rank at "
                              f"epoch {epoch + 1} (lr={cfg.lr:g}, backbone={cfg.backbone}, "
                              f"fusion={cfg.fusion}); lower lr or enable grad_clip")
    return loss, error


def _epoch(run: _Run, epoch: int) -> dict:
    """Train, validate (rank 0), report, and hand the reporter a checkpoint if it improved."""
    cfg, reporter = run.cfg, run.reporter
    t0 = time.perf_counter()
    train_loss, seen, error = _train_one_epoch(run, epoch)
    train_s = time.perf_counter() - t0
    metrics = {"epoch": epoch + 1, "train_loss": math.nan}
    if reporter.rank == 0 and error is None:
        metrics.update(validate(run.model, run.tensors, run.val_idx, run.bf16))
        if not math.isfinite(metrics[SELECT_METRIC]):
            # Diverged weights must never be checkpointed or ranked; the loss alone does not
            # catch this (a finite loss can sit beside NaN predictions on other photos).
            error = NonFiniteLoss(
                f"non-finite validation predictions at epoch {epoch + 1} (lr={cfg.lr:g}, "
                f"backbone={cfg.backbone}, fusion={cfg.fusion}); lower lr or enable grad_clip")
    metrics["train_loss"], error = _agree(run, train_loss, error, epoch)
    if error is not None:
        raise error
    improved = reporter.rank == 0 and (run.best is None
                                       or metrics[SELECT_METRIC] < run.best[SELECT_METRIC])  # min
    metrics.update(epoch_s=time.perf_counter() - t0,
                   samples_per_s=seen * reporter.world_size / train_s,
                   lr=run.scheduler.get_last_lr()[0], aux_weight=aux_weight(cfg, epoch))
    if improved:
        run.best = dict(metrics)

    def save(directory: str, best=run.best) -> None:
        state = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                 "epoch": epoch + 1, "best": best}
        ckpt.write(directory, run.model, cfg, run.stats, run.info, epoch + 1, metrics,
                   train_state=state)

    reporter.report(metrics, save if improved else None)
    return metrics


def _train(cfg: TrainConfig, data, reporter: Reporter) -> FitResult:
    run = _setup(cfg, data, reporter)
    history = []
    for epoch in range(run.start_epoch, cfg.epochs):
        try:
            history.append(_epoch(run, epoch))
        except NonFiniteLoss as e:
            # Raised again, except under Ray (a Tune trial, or every rank of a Train run in the
            # same epoch, see _agree): there it is the run's last result, as a retry would
            # diverge the same way (reporters._RayReporter.diverged).
            reporter.diverged(e, {"epoch": epoch + 1, SELECT_METRIC: math.nan})
            break
    reporter.close()
    return FitResult(best=run.best or {}, history=history if reporter.rank == 0 else [],
                     checkpoint_dir=reporter.best_checkpoint, model=ckpt.unwrap(run.model))


def fit(cfg: TrainConfig | dict, data, reporter: Reporter | None = None,
        checkpoint_dir: str | None = None) -> FitResult:
    """Train `cfg` on `data` (a Prepared or an ObjectRef to one).

    Without a reporter, the one for the calling process is picked (plain Python: in memory, with
    the best checkpoint written to `checkpoint_dir` if given).
    """
    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    if reporter is None:
        reporter = pick_reporter(checkpoint_dir)
    else:
        reporter.default_checkpoint_dir(checkpoint_dir)
    return _train(cfg, data, reporter)


def train_loop_per_worker(config: dict) -> None:
    """Ray entry point: config = {"train": TrainConfig dict, "data": Prepared or ObjectRef}.

    Optional keys: "checkpoint_dir" (plain-Python runs only; under Ray, checkpoints go to the
    run's storage through the reporter).
    """
    cfg = TrainConfig.from_dict(config["train"], where="config['train']")
    fit(cfg, config["data"], checkpoint_dir=config.get("checkpoint_dir"))
