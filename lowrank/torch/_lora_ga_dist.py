"""LoRA-GA under torch.distributed: one global mean gradient, so every rank inits alike.

Data-parallel ranks see different batches. The mean gradient LoRA-GA needs is the sum
over all ranks' batches divided by the global batch count, so the per-rank sums and
counts are all-reduced once after the local passes (DDP's own gradient all-reduce is not
used: the streaming hook folds each ``.grad`` before DDP would see it).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["all_reduce_sums", "distributed", "unwrap"]


def unwrap(model: Any) -> Any:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper."""  # numpydoc ignore=PR01,RT01
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


def distributed() -> bool:
    """True inside an initialised process group with more than one rank."""  # numpydoc ignore=RT01
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def all_reduce_sums(sums: list[torch.Tensor], n_local: int) -> int:
    """Sum `sums` in place over all ranks; return the global batch count."""  # numpydoc ignore=PR01,RT01
    dist = torch.distributed
    device = sums[0].device if sums else torch.device("cpu")
    count = torch.tensor([n_local], dtype=torch.int64, device=device)
    dist.all_reduce(count)
    for s in sums:
        dist.all_reduce(s)
    return int(count.item())
