"""The torch device a model runs on ("auto": a CUDA GPU when one is visible)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from raysweep.errors import UserError


def pick_device(name: str = "auto", assigned_gpus: Sequence = (), node: str = "") -> torch.device:
    """`assigned_gpus`: the GPUs Ray gave this trial (or worker), `node` where it runs. A trial
    given a GPU whose torch sees no CUDA fails here: it would train on the CPU while the GPU
    it reserved stays idle and billed. device=cpu trains on the CPU on purpose."""
    if assigned_gpus and name != "cpu" and not torch.cuda.is_available():
        raise gpu_without_cuda(assigned_gpus, node)
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda was asked for but no CUDA GPU is visible",
                        fix="use device=auto or cpu, or run on a GPU node")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def gpu_without_cuda(assigned_gpus: Sequence, node: str) -> UserError:
    if torch.version.cuda is None:
        why = f"its torch {torch.__version__} is built without CUDA (a CPU-only wheel)"
    else:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")
        why = (f"its torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable "
               f"device (CUDA_VISIBLE_DEVICES={visible}): no NVIDIA driver or container runtime")
    ids = ", ".join(str(g) for g in assigned_gpus)
    return UserError(
        f"Ray gave this trial GPU {ids} on node {node or 'unknown'}, but {why}; it would "
        "train on the CPU while the GPU is reserved",
        where=f"node {node or 'unknown'} (the trial's device check)",
        fix="run the nodes on the project's image (infra/docker/Dockerfile, torch with CUDA) "
            "with the NVIDIA driver and container runtime (KubeRay: the NVIDIA device plugin; "
            "ray up: the GPU AMI of infra/ray/aws.yaml), or pass --gpus-per-trial 0 for CPU "
            "trials, or --set device=cpu to train on the CPU on purpose")
