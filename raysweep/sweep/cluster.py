"""What the Ray cluster is now and what it can become: alive nodes, node groups, autoscaling.

At submit time a scale-from-zero cluster is often a head with no CPU and no GPU. Planning and
the storage check must not read that as "this is all there is", so `shape()` answers, with the
reason, whether an autoscaler may add worker nodes and, where known, what the node groups are.

Where the node groups come from (first found wins):
1. `RAYSWEEP_NODE_GROUPS` in the driver's environment: JSON
   `{"gpu": {"max_workers": 8, "resources": {"CPU": 7, "GPU": 1, "raysweep_group_gpu": 1}}}`;
   the KubeRay manifests set it on the head, next to the worker groups it describes, and so does
   the on-prem launcher config, whose local provider has one node type for head and workers
   (tests/test_infra_manifests.py keeps them equal).
2. The cluster launcher's `~/ray_bootstrap_config.yaml` on the head (`ray up` writes it; the
   driver of `ray job submit` runs on the head): its `available_node_types`.
A group's own resource (`raysweep_group_<name>`, one unit per node, see `pin_of`) lets the plan
pin trials to that group: without it the autoscaler may add any node type that fits a trial.
Whether the cluster may grow: known node groups, else the autoscaler's own status in the GCS
(node types it can launch, nodes it is launching; the v1 monitor writes it), else Ray reporting
autoscaler v2 for the cluster (v2 writes no such status), else a head that offers no CPU and no
GPU (nothing could ever run on such a cluster unless nodes are added).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raysweep import _compat
from raysweep.errors import UserError

log = logging.getLogger(__name__)

GROUPS_ENV = "RAYSWEEP_NODE_GROUPS"
PIN_PREFIX = "raysweep_group_"
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
HEAD_MARK = "node:__internal_head__"


@dataclass(frozen=True)
class NodeGroup:
    name: str
    max_workers: int  # -1: no limit given
    resources: Mapping[str, float]

    def describe(self) -> str:
        r = self.resources
        gpu = f", {r.get('GPU', 0):g} GPU" if r.get("GPU") else ""
        most = "unbounded" if self.max_workers < 0 else f"up to {self.max_workers}"
        return f"{self.name} ({most} x {r.get('CPU', 0):g} CPU{gpu})"


@dataclass(frozen=True)
class Shape:
    alive: int  # alive nodes now
    cpus: float  # what they offer now
    gpus: float
    may_grow: bool
    reason: str  # why may_grow is what it is, for the plan line and the storage message
    groups: tuple[NodeGroup, ...] = field(default=())


def pin_of(group: NodeGroup) -> str:
    """The group's own resource (`raysweep_group_...`), or "" when it declares none."""
    return next((k for k in group.resources if k.startswith(PIN_PREFIX)), "")


def parse_groups(text: str, where: str = GROUPS_ENV) -> tuple[NodeGroup, ...]:
    """`RAYSWEEP_NODE_GROUPS` JSON -> node groups; a malformed value is a UserError."""
    try:
        raw = json.loads(text)
        groups = tuple(NodeGroup(str(name), int(g.get("max_workers", -1)),
                                 {str(k): float(v) for k, v in g.get("resources", {}).items()})
                       for name, g in raw.items())
    except (ValueError, TypeError, AttributeError) as e:
        raise UserError(f"{where} is not valid JSON of node groups: {e}", where=where,
                        fix='set it like {"gpu": {"max_workers": 8, "resources": '
                            '{"CPU": 7, "GPU": 1}}}, or unset it') from None
    return groups


def groups_from_launcher_config(config: Mapping[str, Any]) -> tuple[NodeGroup, ...]:
    """The worker node types of a cluster launcher config (the head's type left out)."""
    head = config.get("head_node_type")
    return tuple(NodeGroup(name, int(t.get("max_workers", config.get("max_workers", -1))),
                           {k: float(v) for k, v in (t.get("resources") or {}).items()})
                 for name, t in (config.get("available_node_types") or {}).items()
                 if name != head)


def declared_groups(environ: Mapping[str, str] | None = None,
                    bootstrap: str = BOOTSTRAP_CONFIG) -> tuple[tuple[NodeGroup, ...], str]:
    """(node groups, where they came from); ((), "") when nothing declares them."""
    env = os.environ if environ is None else environ
    if env.get(GROUPS_ENV, "").strip():
        return parse_groups(env[GROUPS_ENV]), GROUPS_ENV
    path = Path(bootstrap).expanduser()
    if path.is_file():
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            log.debug("unreadable %s: %s", path, e)
            return (), ""
        return groups_from_launcher_config(config), str(path)
    return (), ""


def decide(nodes: Sequence[Mapping[str, Any]], groups: Sequence[NodeGroup] = (),
           groups_from: str = "", autoscaler_types: Sequence[str] = (),
           autoscaler_v2: bool = False) -> Shape:
    """Pure: the cluster's shape from `ray.nodes()`-like dicts, what declares node groups, and
    what the autoscaler reports (v1: the node types it can launch; v2: that it runs)."""
    alive = [n for n in nodes if n.get("Alive", n.get("alive", False))]
    cpus = sum(float(n.get("Resources", {}).get("CPU", 0)) for n in alive)
    gpus = sum(float(n.get("Resources", {}).get("GPU", 0)) for n in alive)
    growing = [g for g in groups if g.max_workers != 0]
    if growing:
        reason = f"node groups from {groups_from}: " + ", ".join(g.describe() for g in growing)
        return Shape(len(alive), cpus, gpus, True, reason, tuple(growing))
    if autoscaler_types:
        reason = "the autoscaler can launch " + ", ".join(sorted(autoscaler_types))
        return Shape(len(alive), cpus, gpus, True, reason)
    if autoscaler_v2:
        return Shape(len(alive), cpus, gpus, True,
                     f"Ray reports autoscaler v2 on this cluster (its node groups are unknown "
                     f"to raysweep: declare them in {GROUPS_ENV} to plan and pin trials by group)")
    if alive and cpus == 0 and gpus == 0:
        return Shape(len(alive), cpus, gpus, True,
                     "the cluster has no CPU and no GPU yet (a head that runs no trials), so "
                     "its autoscaler must add worker nodes")
    return Shape(len(alive), cpus, gpus, False,
                 f"{len(alive)} node(s) and no autoscaler that can add more")


def autoscaler_node_types(gcs_status: str | bytes | None) -> list[str]:
    """Worker node types the autoscaler reports it can launch or is launching (the v1 monitor's
    status JSON in the GCS; a plain `ray start` cluster reports none)."""
    if not gcs_status:
        return []
    try:
        report = json.loads(gcs_status).get("autoscaler_report") or {}
    except (ValueError, AttributeError):
        return []
    kinds = set((report.get("node_availability_summary") or {})
                .get("node_availabilities", {}) or {})
    kinds |= set(report.get("pending_launches") or {})
    kinds |= {p[1] for p in report.get("pending_nodes") or [] if len(p) > 1}
    mapping = report.get("node_type_mapping") or {}
    head_types = {t for t in mapping.values() if "head" in str(t)}
    return sorted(k for k in kinds if k not in head_types)


def _autoscaler_status() -> bytes | None:
    """raysweep._compat.autoscaler_status (a private Ray API), or None when it fails."""
    try:
        return _compat.autoscaler_status()
    except Exception as e:  # noqa: BLE001 - private API: unknown means "no autoscaler seen"
        log.debug("no autoscaler status: %s", e)
        return None


def _autoscaler_v2() -> bool:
    """raysweep._compat.autoscaler_v2 (a private Ray API), or False when it fails."""
    try:
        return _compat.autoscaler_v2()
    except Exception as e:  # noqa: BLE001 - private API: unknown means "no autoscaler seen"
        log.debug("cannot tell whether autoscaler v2 runs: %s", e)
        return False


def observe(nodes: Sequence[Mapping[str, Any]],
            environ: Mapping[str, str] | None = None) -> Shape:
    """The shape of the connected cluster whose `ray.nodes()` are `nodes`: declared groups,
    else what its autoscaler reports."""
    groups, source = declared_groups(environ)
    types = [] if groups else autoscaler_node_types(_autoscaler_status())
    v2 = not groups and not types and _autoscaler_v2()
    return decide(nodes, groups, source, types, autoscaler_v2=v2)


def shape(environ: Mapping[str, str] | None = None) -> Shape:
    """The connected cluster's shape (call after ray.init)."""
    import ray

    return observe(ray.nodes(), environ)
