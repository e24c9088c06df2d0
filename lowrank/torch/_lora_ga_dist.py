"""LoRA-GA under torch.distributed: one global mean gradient, so every rank inits alike.

Data-parallel ranks see different batches. The mean gradient LoRA-GA needs is the sum
over all ranks' batches divided by the global batch count, so the per-rank sums and
counts are all-reduced once after the local passes (DDP's own gradient all-reduce is not
used: the streaming hook folds each ``.grad`` before DDP would see it). Under FSDP2
(``fully_shard``) the gradients arrive as reduce-scattered shards, which are gathered.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["all_reduce_sums", "distributed", "is_sharded", "refuse_sharded", "unwrap"]


def is_sharded(t: Any) -> bool:
    """True for a ``DTensor`` (an FSDP2 ``fully_shard`` parameter or its gradient)."""  # numpydoc ignore=PR01,RT01
    return type(t).__name__ == "DTensor" and hasattr(t, "full_tensor")


def refuse_sharded(pairs: Any) -> None:
    """Refuse LoRA layers whose tensors are FSDP2 shards, naming the first one."""  # numpydoc ignore=PR01
    for pair in pairs:
        if any(is_sharded(t) for t in (pair.weight, pair.A, pair.B)):
            msg = (
                f"LoRA layer {pair.name!r} is sharded by FSDP2 (fully_shard: its tensors are "
                "DTensor shards); lora_ga_init_ writes whole weights and adapters. Initialise "
                "before sharding: estimate_gradients works on the sharded model (it returns "
                "full gradients, equal on every rank), then call lora_ga_init_ on the "
                "unsharded model on every rank with the same rng, then fully_shard it"
            )
            raise ValueError(msg)


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
    Every rank holds the same targets in the same order. FSDP2 shards (DTensor) were
    reduce-scattered by FSDP itself, as the mean over ranks of each batch's gradient
    (its default): they are all-gathered and multiplied by the world size instead.
    """  # numpydoc ignore=PR01,RT01
    dist = torch.distributed
    names = list(accum)
    first = next((a for a in accum.values() if a is not None), None)
    device = first.device if first is not None else next(iter(shapes.values()))[1]
    hits = [0 if accum[n] is None else 1 for n in names]
    counts = torch.tensor([n_local, *hits], dtype=torch.int64, device=device)
    dist.all_reduce(counts)
    reached = counts[1:].tolist()
    sums, world = {}, dist.get_world_size()
    for name, hit in zip(names, reached, strict=True):
        acc = accum[name]
        if hit and acc is not None and is_sharded(acc):
            if hit != world:
                msg = f"FSDP2-sharded target {name!r} got a gradient on only {hit} of {world} ranks"
                raise RuntimeError(msg)
            sums[name] = acc.full_tensor().mul_(world)  # FSDP averaged over the ranks
        elif hit:
            shape, dev = shapes[name]
            sums[name] = torch.zeros(shape, dtype=dtype, device=dev) if acc is None else acc
            dist.all_reduce(sums[name])
    return sums, int(counts[0].item())
