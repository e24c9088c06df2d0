"""Pair resolution and layer batching for LoRA-Pro on torch: one core call per shape group."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from .._lora_pro import equivalent_gradient, lora_pro_adjust
from ._layers import LoraPair, find_lora_pairs

__all__ = ["Pair", "adjusted_grads", "equivalent_grads", "project_back", "resolve_pairs"]


@dataclass(frozen=True)
class Pair:
    """One (lora_A, lora_B) pair with its own scaling."""

    name: str
    A: torch.Tensor
    B: torch.Tensor
    scaling: float


def resolve_pairs(source: Any, *, adapter: str | None = None) -> list[Pair]:
    """Return the pairs of a model, or normalise explicit pairs."""  # numpydoc ignore=PR01,RT01
    if isinstance(source, torch.nn.Module):
        return [Pair(p.name, p.A, p.B, p.scaling) for p in find_lora_pairs(source, adapter=adapter)]
    if not isinstance(source, Iterable):
        msg = (
            f"expected a torch.nn.Module or an iterable of LoRA pairs; got {type(source).__name__}"
        )
        raise TypeError(msg)
    return [_one_pair(item, i) for i, item in enumerate(source)]


def _one_pair(item: Any, i: int) -> Pair:
    """Normalise one explicit pair and check its shapes and scaling."""  # numpydoc ignore=PR01,RT01
    if isinstance(item, (LoraPair, Pair)):
        pair = Pair(item.name, item.A, item.B, float(item.scaling))
    elif isinstance(item, (tuple, list)) and len(item) == 3:
        pair = Pair(f"pair{i}", item[0], item[1], item[2])
    else:
        msg = f"pair {i} must be a LoraPair or an (A, B, scaling) tuple; got {item!r}"
        raise TypeError(msg)
    A, B = pair.A, pair.B
    if not (isinstance(A, torch.Tensor) and isinstance(B, torch.Tensor)):
        msg = f"pair {pair.name!r}: A and B must be tensors"
        raise TypeError(msg)
    if A.ndim != 2 or B.ndim != 2 or B.shape[1] != A.shape[0]:
        msg = (
            f"pair {pair.name!r}: need A of shape (r, in) and B of shape (out, r); "
            f"got {tuple(A.shape)} and {tuple(B.shape)}"
        )
        raise ValueError(msg)
    s = pair.scaling
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0 or s == float("inf"):
        msg = f"pair {pair.name!r}: `scaling` must be finite and > 0; got {s!r}"
        raise ValueError(msg)
    return Pair(pair.name, A, B, float(s))


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """Return the compute dtype: float64, else float32."""  # numpydoc ignore=PR01,RT01
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _groups(pairs: list[Pair]) -> dict[tuple, list[int]]:
    """Indices of stackable pairs: same shapes, device, dtype."""  # numpydoc ignore=PR01,RT01
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        key = (tuple(p.A.shape), tuple(p.B.shape), p.A.device, compute_dtype(p.A))
        groups[key].append(i)
    return groups


def _stack(
    tensors: list[torch.Tensor | None],
    like: list[torch.Tensor],
    dtype: torch.dtype,
    buffers: dict | None,
    key: tuple,
) -> torch.Tensor:
    """Stack in ``dtype``, into a reused buffer if given; None is 0."""  # numpydoc ignore=PR01,RT01
    items = [
        torch.zeros_like(w, dtype=dtype) if t is None else t.to(dtype)
        for t, w in zip(tensors, like, strict=True)
    ]
    if buffers is None:
        return torch.stack(items)
    out = buffers.get(key)
    if out is None or out.shape != (len(items), *items[0].shape):
        out = buffers[key] = torch.empty(
            (len(items), *items[0].shape), dtype=dtype, device=items[0].device
        )
    # Reusing the memory avoids fresh page faults for large stacks on every step.
    return torch.stack(items, out=out)


def _batched(pairs, grads_A, grads_B, idx, dtype, buffers=None):
    """Stacked A, B, grads and scalings of the pairs ``idx``."""  # numpydoc ignore=PR01,RT01
    As = [pairs[i].A for i in idx]
    Bs = [pairs[i].B for i in idx]
    tag = (tuple(idx), dtype)
    A = _stack(As, As, dtype, buffers, ("A", *tag))
    B = _stack(Bs, Bs, dtype, buffers, ("B", *tag))
    gA = _stack([grads_A[i] for i in idx], As, dtype, buffers, ("gA", *tag))
    gB = _stack([grads_B[i] for i in idx], Bs, dtype, buffers, ("gB", *tag))
    s = torch.tensor([pairs[i].scaling for i in idx], dtype=dtype, device=A.device)
    return A, B, gA, gB, s


def adjusted_grads(pairs, grads_A, grads_B, *, gauge, damping, buffers=None):
    """LoRA-Pro adjusted (grad_A, grad_B) per pair, in the compute dtype; one core call per group.

    ``buffers`` (a dict owned by the caller) keeps the stacked inputs between calls.
    """  # numpydoc ignore=PR01,RT01
    out_A: list[Any] = [None] * len(pairs)
    out_B: list[Any] = [None] * len(pairs)
    for (_, _, _, dtype), idx in _groups(pairs).items():
        A, B, gA, gB, s = _batched(pairs, grads_A, grads_B, idx, dtype, buffers)
        # Inputs were validated by the optimizer's contract; NaN/Inf gradients propagate
        # to the update exactly as in torch.optim.AdamW.
        res = lora_pro_adjust(
            A, B, gA, gB, scaling=s, gauge=gauge, damping=damping, check_finite=False
        )
        for k, i in enumerate(idx):
            out_A[i], out_B[i] = res.grad_A[k], res.grad_B[k]
    return out_A, out_B


def equivalent_grads(pairs, grads_A, grads_B, *, damping, max_elements=1 << 26):
    """Equivalent gradients g~ per pair, in chunks of bounded size."""  # numpydoc ignore=PR01,RT01
    out: list[Any] = [None] * len(pairs)
    for (a_shape, b_shape, _, dtype), idx in _groups(pairs).items():
        chunk = max(1, max_elements // max(1, b_shape[0] * a_shape[1]))
        for start in range(0, len(idx), chunk):
            part = idx[start : start + chunk]
            A, B, gA, gB, s = _batched(pairs, grads_A, grads_B, part, dtype)
            g = equivalent_gradient(A, B, gA, gB, scaling=s, damping=damping, check_finite=False)
            for k, i in enumerate(part):
                out[i] = g[k]
    return out


def project_back(pairs, updates, *, gauge, damping):
    """Full mode: factor directions from weight-space updates."""  # numpydoc ignore=PR01,RT01
    dt = [compute_dtype(p.A) for p in pairs]
    uA = [p.scaling * p.B.to(d).T @ u for p, u, d in zip(pairs, updates, dt, strict=True)]
    uB = [p.scaling * u @ p.A.to(d).T for p, u, d in zip(pairs, updates, dt, strict=True)]
    return adjusted_grads(pairs, uA, uB, gauge=gauge, damping=damping)
