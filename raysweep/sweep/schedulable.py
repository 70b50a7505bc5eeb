"""Refuse, before Tune queues anything, a trial worker that no node of a fixed cluster can hold.

Ray places each worker (one resource bundle) on one node. The plan counts the cluster's totals,
so `--cpus-per-worker 64` on 8-CPU machines looked plannable and Tune waited forever for a node
that will never come. A cluster that can grow is left to `resources.plan` (its node groups).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from raysweep.errors import UserError


def check_fits_a_node(pl, nodes: Sequence[Mapping[str, Any]] | None = None) -> None:
    """UserError naming the largest alive node when one worker of `pl` fits on none."""
    if nodes is None:
        import ray

        nodes = ray.nodes()
    alive = [n for n in nodes if n.get("Alive", n.get("alive", False))]
    have = [(float(n.get("Resources", {}).get("CPU", 0)), float(n.get("Resources", {}).get(
        "GPU", 0)), str(n.get("NodeManagerAddress", "?"))) for n in alive]
    need_cpu, need_gpu = pl.cpus_per_worker, pl.gpus_per_worker
    if not have or any(c + 1e-9 >= need_cpu and g + 1e-9 >= need_gpu for c, g, _ in have):
        return
    cpu, gpu, address = max(have, key=lambda h: (h[1] >= need_gpu, h[0], h[1]))
    gpu_need = f" and {need_gpu:g} GPU" if need_gpu else ""
    raise UserError(
        f"one worker of a trial needs {need_cpu:g} CPU{gpu_need} on one node, but the largest "
        f"node ({address}) has {cpu:g} CPU and {gpu:g} GPU, and this cluster cannot add nodes: "
        "Tune would wait forever", where="--cpus-per-worker / --gpus-per-trial",
        fix=f"ask for at most {cpu:g} CPU per worker (--cpus-per-worker), spread the trial over "
            "workers (--workers-per-trial), or run on a cluster with larger nodes")
