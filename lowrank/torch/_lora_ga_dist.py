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


def all_reduce_sums(
    accum: dict[str, torch.Tensor | None],
    shapes: dict[str, tuple[tuple[int, ...], torch.device]],
    dtype: torch.dtype,
    n_local: int,
) -> tuple[dict[str, torch.Tensor], int]:
    """Sum the per-rank sums over all ranks; return them and the global batch count.

    One collective first sums the batch counts and, per target, whether this rank's
    backward reached it; a target no rank reached is left out (as on one process). A
    target reached on some ranks only needs a zero sum on the others for the collective.
    Every rank holds the same targets in the same order.
    """  # numpydoc ignore=PR01,RT01
    dist = torch.distributed
    names = list(accum)
    first = next((a for a in accum.values() if a is not None), None)
    device = first.device if first is not None else next(iter(shapes.values()))[1]
    hits = [0 if accum[n] is None else 1 for n in names]
    counts = torch.tensor([n_local, *hits], dtype=torch.int64, device=device)
    dist.all_reduce(counts)
    reached = counts[1:].tolist()
    sums = {}
    for name, hit in zip(names, reached, strict=True):
        if hit:
            shape, dev = shapes[name]
            acc = accum[name]
            sums[name] = torch.zeros(shape, dtype=dtype, device=dev) if acc is None else acc
            dist.all_reduce(sums[name])
    return sums, int(counts[0].item())
