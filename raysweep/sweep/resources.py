"""Where trials run: connecting to Ray, per-trial resources, concurrency, and freeing reservations.

Concurrency comes from what the cluster really has. A local Ray gets more logical CPUs than the
machine has cores (Tune's own actors must never starve the trials), so on a laptop the number of
trials at once is capped by the physical cores instead of the logical CPUs. A cluster that can
grow (raysweep.sweep.cluster) is planned from the flags and its node groups instead: for ONE
group (`choose_group`: the fewest GPUs per node that holds a whole trial), to which the trials
are pinned by the group's own resource, so that the autoscaler adds only that node type; a DDP
trial's workers share one node (STRICT_PACK). Its autoscaler is asked for the first wave of
trials up front (raysweep.sweep.first_wave).

Resource flags, one meaning each: --gpus-per-trial is the trial's total GPU share (split evenly
across its workers), --cpus-per-worker is per Ray Train worker (= per trial for one worker).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import ray
from ray import ActorID, PlacementGroupID, tune
from ray.util import placement_group_table
from ray.util.placement_group import PlacementGroup, remove_placement_group

from raysweep import _compat
from raysweep.errors import UserError
from raysweep.sweep.cluster import PIN_PREFIX, NodeGroup, Shape, pin_of, shape
from raysweep.sweep.spec import Resources

log = logging.getLogger(__name__)


@dataclass
class Plan:
    workers: int  # Ray Train workers per trial; 1 = the loop runs in the Tune trial itself
    cpus_per_worker: float
    gpus_per_worker: float  # --gpus-per-trial / workers: the flag is the trial's total
    max_concurrent: int
    cluster_cpus: float
    cluster_gpus: float
    local: bool  # the cluster is this one machine: its cores, not logical CPUs, bound concurrency
    grows: bool = False  # an autoscaler may add nodes: planned from the flags, not what is up
    why: str = ""  # one clause: where the concurrency and the GPU share came from
    pin: str = ""  # the planned node group's own resource; every trial asks PIN_SHARE of it
    strategy: str = "PACK"  # placement of a DDP trial's workers (STRICT_PACK: one node)

    def pinned(self) -> dict[str, float]:
        """The share of the group's own resource each worker (and DDP driver) asks for."""
        return {self.pin: PIN_SHARE} if self.pin else {}

    def trial_resources(self) -> dict[str, float]:
        """What Tune reserves for the trial actor."""
        if self.workers == 1:
            return {"cpu": self.cpus_per_worker, "gpu": self.gpus_per_worker, **self.pinned()}
        # Multi-worker: the trial only drives a TorchTrainer, whose workers reserve their own
        # placement group; the driver still needs a (small) CPU share to be scheduled at all.
        return {"cpu": DDP_DRIVER_CPU, "gpu": 0, **self.pinned()}

    def first_wave(self) -> list[dict[str, float]]:
        """Resource bundles of the trials that should start at once (for the autoscaler)."""
        worker = {"CPU": self.cpus_per_worker,
                  **({"GPU": self.gpus_per_worker} if self.gpus_per_worker else {}),
                  **self.pinned()}
        per_trial = [dict(worker) for _ in range(self.workers)]
        if self.workers > 1:
            per_trial.append({"CPU": DDP_DRIVER_CPU, **self.pinned()})
        return [b for _ in range(self.max_concurrent) for b in per_trial]

    def describe(self) -> str:
        per = f"{self.cpus_per_worker:g} CPU" + (f" + {self.gpus_per_worker:g} GPU"
                                                 if self.gpus_per_worker else "")
        mode = "in the trial process" if self.workers == 1 else f"{self.workers} DDP workers" + (
            " on one node" if self.strategy == "STRICT_PACK" else "")
        now = f"cluster now: {self.cluster_cpus:g} CPU, {self.cluster_gpus:g} GPU"
        return (f"planned {self.max_concurrent} trial(s) at once, each {mode} with {per} per "
                f"worker ({now}; {self.why})" if self.why else
                f"planned {self.max_concurrent} trial(s) at once, each {mode} with {per} per "
                f"worker ({now})")


DDP_DRIVER_CPU = 0.1
# Of the one unit of its own resource a group's node has: it pins a trial to the group and
# never limits how many trials share a node (CPU and GPU do).
PIN_SHARE = 0.001


def connect(num_cpus: int | None = None, dashboard: bool = True,
            log_to_driver: bool = True) -> bool:
    """Join the cluster named by RAY_ADDRESS (set by `ray job submit`), else start a local Ray.

    Returns True when this process started Ray (and so should shut it down).
    """
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    # Ray Train's controller polls its workers every 2 s by default, so each per-epoch report of
    # a sub-second epoch blocked for up to 2 s (tinycnn in a TorchTrainer: 153 vs 1,231
    # samples/s). Local workers inherit this process's environment; clusters set it in infra/.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.05")
    # address="local": never join a cluster someone else started on this machine by accident.
    ray.init(address="local", num_cpus=num_cpus or max(8, cores()),
             include_dashboard=dashboard, dashboard_host="127.0.0.1", log_to_driver=log_to_driver,
             configure_logging=False)
    return True


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what a container really gives us
    except AttributeError:
        return os.cpu_count() or 1


def only_this_machine() -> bool:
    """True when the Ray cluster is this one machine (so its cores bound real parallelism)."""
    here = ray.get_runtime_context().get_node_id()
    alive = [n for n in ray.nodes() if n.get("Alive")]
    return len(alive) == 1 and alive[0]["NodeID"] == here


def plan(num_samples: int, asked: Resources = Resources(), *, local: bool | None = None,
         cpus: float | None = None, gpus: float | None = None,
         growth: Shape | None = None) -> Plan:
    """Resources per trial (`asked`: the resource flags) and how many trials run at once.

    `gpus_per_trial` is the whole trial's share, split evenly across its workers (one meaning
    for one worker and for DDP). None picks 1/4 of a GPU per single-worker trial when the
    cluster has (or its node groups have) GPUs, since small models do not fill one, and one
    GPU per worker for DDP trials. On a cluster that can grow (`growth.may_grow`), the flags
    are trusted and concurrency comes from the node groups' maximum size, not from what is up.
    """
    workers, cpus_per_worker = asked.workers_per_trial, asked.cpus_per_worker
    gpus_per_trial, max_concurrent = asked.gpus_per_trial, asked.max_concurrent
    if growth is None:
        growth = shape() if cpus is None and gpus is None else None
        if local is None:
            local = only_this_machine()
        if cpus is None or gpus is None:
            total = ray.cluster_resources()
            cpus = total.get("CPU", 0.0) if cpus is None else cpus
            gpus = total.get("GPU", 0.0) if gpus is None else gpus
    else:
        cpus = growth.cpus if cpus is None else cpus
        gpus = growth.gpus if gpus is None else gpus
        local = bool(local)
    if workers < 1:
        raise UserError(f"--workers-per-trial must be >= 1, got {workers}")
    if cpus_per_worker <= 0:
        raise UserError(f"--cpus-per-worker must be > 0, got {cpus_per_worker}")
    if gpus_per_trial is not None and gpus_per_trial < 0:
        raise UserError(f"--gpus-per-trial must be >= 0, got {gpus_per_trial:g}")
    if growth is not None and growth.may_grow:
        return _plan_growing(num_samples, asked, cpus, gpus, growth)
    if gpus_per_trial is None:
        gpus_per_trial = 0.0 if gpus == 0 else default_gpus(workers)
    if gpus_per_trial > 0 and gpus == 0:
        raise UserError(f"--gpus-per-trial {gpus_per_trial:g} asks for GPUs, but the Ray "
                        "cluster has none and no autoscaler that could add GPU nodes",
                        fix="drop --gpus-per-trial or use a GPU cluster")
    gpus_per_worker = gpus_per_trial / workers
    # The real parallelism of a local Ray is its cores, not its (inflated) logical CPUs.
    usable = min(cpus, float(cores())) if local else cpus
    fits = trials_that_fit(usable, gpus, workers, cpus_per_worker, gpus_per_worker)
    if fits == 0 and not local:
        raise UserError(f"one trial needs {workers} x ({cpus_per_worker:g} CPU, "
                        f"{gpus_per_worker:g} GPU) but the cluster has {cpus:g} CPU, {gpus:g} GPU",
                        fix="lower --workers-per-trial / --cpus-per-worker / --gpus-per-trial")
    concurrent = max(1, fits)
    why = "what fits on this machine's cores" if local else "what fits on the nodes up now"
    if max_concurrent:
        if max_concurrent > concurrent:
            # A local Ray started with more logical CPUs than cores runs them all anyway.
            logical = trials_that_fit(cpus, gpus, workers, cpus_per_worker, gpus_per_worker)
            log.warning("--max-concurrent %d is more than the %d trial(s) %s; %s", max_concurrent,
                        concurrent, "this machine's cores run at once" if local else
                        "the resources fit", "they will share the cores, each one slower"
                        if local and max_concurrent <= logical else "the rest will queue")
        concurrent, why = max_concurrent, "--max-concurrent"
    return Plan(workers, cpus_per_worker, gpus_per_worker, min(concurrent, num_samples),
                cpus, gpus, local, why=why)


def default_gpus(workers: int) -> float:
    """--gpus-per-trial when not given on a GPU cluster: a quarter GPU for a one-worker trial
    (small models share a device), one GPU per worker for DDP."""
    return 0.25 if workers == 1 else float(workers)


def trials_that_fit(cpus: float, gpus: float, workers: int, cpus_per_worker: float,
                    gpus_per_worker: float) -> int:
    """Whole trials that fit into (cpus, gpus) at once."""
    limits = [math.floor(cpus / (cpus_per_worker * workers) + 1e-9)]
    if gpus_per_worker > 0:
        limits.append(math.floor(gpus / (gpus_per_worker * workers) + 1e-9))
    return max(0, min(limits))


def _plan_growing(num_samples: int, asked: Resources, cpus: float, gpus: float,
                  growth: Shape) -> Plan:
    """Plan for a cluster whose autoscaler adds nodes: never conclude from what is up now."""
    workers, cpus_per_worker = asked.workers_per_trial, asked.cpus_per_worker
    gpus_per_trial, max_concurrent = asked.gpus_per_trial, asked.max_concurrent
    groups = growth.groups
    group_gpus = any(g.resources.get("GPU", 0) > 0 for g in groups)
    if gpus_per_trial is None:
        # GPUs known to exist (now or in a node group) get used; unknown groups: CPU trials,
        # and the plan line says how to ask for GPUs.
        gpus_per_trial = default_gpus(workers) if gpus > 0 or group_gpus else 0.0
    gpus_per_worker = gpus_per_trial / workers
    if groups and gpus_per_worker > 0 and not group_gpus and gpus == 0:
        raise UserError(f"--gpus-per-trial {gpus_per_trial:g} asks for GPUs, but no node group "
                        f"of this cluster has any ({growth.reason})",
                        fix="drop --gpus-per-trial, or add a GPU worker group to the cluster")
    pin, strategy = "", "PACK"
    if groups:
        choice = choose_group(groups, workers, cpus_per_worker, gpus_per_worker)
        if choice is None:
            raise no_group_holds_a_trial(groups, workers, cpus_per_worker, gpus_per_worker,
                                         growth.reason)
        pin, strategy = pin_of(choice.group), "STRICT_PACK" if workers > 1 else "PACK"
        fits = num_samples if choice.fits < 0 else choice.fits
        why = choice.describe(pin) + f"; {growth.reason}"
    else:
        fits, why = num_samples, f"node group sizes unknown: as many as the autoscaler " \
                                 f"adds; {growth.reason}"
    if max_concurrent:
        fits, why = max_concurrent, f"--max-concurrent; {why}"
    if gpus_per_worker == 0 and not group_gpus and gpus == 0:
        why += "; CPU trials: pass --gpus-per-trial for GPU worker nodes"
    return Plan(workers, cpus_per_worker, gpus_per_worker, max(1, min(fits, num_samples)),
                cpus, gpus, local=False, grows=True, why=why, pin=pin, strategy=strategy)


@dataclass(frozen=True)
class GroupChoice:
    group: NodeGroup
    per_node: int  # whole trials one node holds
    fits: int  # trials at once at the group's maximum size; -1: its size has no limit

    def describe(self, pin: str) -> str:
        size = "no size limit" if self.fits < 0 else f"at its maximum, {self.group.max_workers} " \
            f"node(s) x {self.per_node} trial(s)"
        pinned = f"trials pinned by {pin}" if pin else \
            f"it declares no {PIN_PREFIX}* resource, so the autoscaler may add " \
            "another node type for these trials"
        return f"node group {self.group.name} ({size}; {pinned})"


def choose_group(groups, workers: int, cpus_per_worker: float,
                 gpus_per_worker: float) -> GroupChoice | None:
    """The one node group a sweep's trials run on: among the groups one of whose nodes holds a
    whole trial (a DDP trial's workers share a node), the fewest GPUs per node (GPUs are the
    bill, and a CPU trial takes no GPU node while another group fits), then the most trials at
    once. None when no node of any group holds a trial."""
    choices = []
    for g in groups:
        if g.max_workers == 0:
            continue
        per_node = _workers_per_node(g.resources, cpus_per_worker, gpus_per_worker) // workers
        if per_node >= 1:
            choices.append(GroupChoice(g, per_node,
                                       -1 if g.max_workers < 0 else g.max_workers * per_node))
    if not choices:
        return None
    return min(choices, key=lambda c: (float(c.group.resources.get("GPU", 0)),
                                       -(c.fits if c.fits >= 0 else math.inf)))


def no_group_holds_a_trial(groups, workers: int, cpus_per_worker: float, gpus_per_worker: float,
                           reason: str) -> UserError:
    largest = max(groups, key=lambda g: (g.resources.get("GPU", 0), g.resources.get("CPU", 0)))
    on_one = " on one node (a DDP trial's workers share a node)" if workers > 1 else ""
    return UserError(f"one trial needs {workers} x ({cpus_per_worker:g} CPU, "
                     f"{gpus_per_worker:g} GPU){on_one}, more than any node group's node "
                     f"offers; the largest is {largest.describe()} ({reason})",
                     fix="lower --workers-per-trial / --cpus-per-worker / --gpus-per-trial, "
                         "or add a node group with larger nodes")


def _workers_per_node(resources: Mapping[str, float], cpus_per_worker: float,
                      gpus_per_worker: float) -> int:
    return trials_that_fit(float(resources.get("CPU", 0)), float(resources.get("GPU", 0)), 1,
                           cpus_per_worker, gpus_per_worker)


def orphaned_placement_groups() -> list:
    """Placement groups still holding resources although the actor that made them is gone.

    A Ray Train controller inside a Tune trial creates its workers' placement group; when ASHA
    stops the trial the controller dies, but the group lives on until the driver exits unless
    Train's cleaner can reach the State API (which needs the dashboard). The GCS table alone
    tells us which ones are orphans, dashboard or not.
    """
    orphans = []
    live_states = _compat.placement_group_live_states()
    for pg in _compat.placement_group_table():
        live = pg.state in live_states
        # Groups made by a driver (Tune's own, per trial) have no creator actor: leave them.
        made_by_actor = pg.creator_actor_id and not ActorID(pg.creator_actor_id).is_nil()
        if live and not pg.is_detached and made_by_actor and pg.creator_actor_dead:
            orphans.append(PlacementGroup(PlacementGroupID(pg.placement_group_id)))
    return orphans


def free_orphaned_placement_groups(wait_s: float = 0.0) -> int:
    """Remove orphaned groups; with `wait_s`, keep looking that long for controllers that are
    still shutting down (at the end of a sweep)."""
    freed = 0
    deadline = time.monotonic() + wait_s
    while True:
        for pg in orphaned_placement_groups():
            try:
                remove_placement_group(pg)
                freed += 1
            except Exception as e:  # noqa: BLE001 - already removed by Train's own cleaner
                log.debug("could not remove placement group %s: %s", pg.id, e)
        if time.monotonic() >= deadline or not _train_groups_alive():
            break
        time.sleep(0.5)
    if freed:
        log.info("freed %d placement group(s) left by stopped trials", freed)
    return freed


class PlacementGroupJanitor(tune.Callback):
    """Frees orphaned placement groups every few seconds while multi-worker trials run."""

    def __init__(self, interval_s: float = 2.0):
        self.interval_s, self.last = interval_s, 0.0

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.last > self.interval_s:
            self.last = time.monotonic()
            self.sweep()

    def on_experiment_end(self, trials, **info):
        self.sweep()

    @staticmethod
    def sweep() -> None:
        try:
            free_orphaned_placement_groups()
        except Exception as e:  # noqa: BLE001 - a private Ray API changed: warn, keep the sweep
            log.warning("could not look for orphaned placement groups: %s", e)


def _train_groups_alive() -> bool:
    """Any placement group besides Tune's (which are gone once the sweep ends) still held?"""
    return any(pg["state"] in ("CREATED", "PENDING", "RESCHEDULING")
               for pg in placement_group_table().values())
