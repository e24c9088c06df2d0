"""Pair resolution for LoRA-Pro on torch, and the batched adjustment of explicit gradients."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from .._lora_pro import _check_damping
from ._layers import LoraPair, find_lora_pairs
from ._lora_pro_stack import Layout, adjusted, coefficients, compute_dtype

__all__ = ["Pair", "adjusted_grads", "check_damping", "compute_dtype", "resolve_pairs"]


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
        found = find_lora_pairs(source, adapter=adapter)
        pairs = [Pair(p.name, p.A, p.B, p.scaling) for p in found]
    elif not isinstance(source, Iterable):
        msg = (
            f"expected a torch.nn.Module or an iterable of LoRA pairs; got {type(source).__name__}"
        )
        raise TypeError(msg)
    else:
        pairs = [_one_pair(item, i) for i, item in enumerate(source)]
    for pair in pairs:
        _check_factors(pair)
    return pairs


def _check_factors(pair: Pair) -> None:
    """Real floating-point factors of rank >= 1 (stacks are real: complex would be cut)."""  # numpydoc ignore=PR01
    for side, t in (("A", pair.A), ("B", pair.B)):
        if not t.is_floating_point():
            msg = f"pair {pair.name!r}: {side} must be a real floating-point tensor; got {t.dtype}"
            raise TypeError(msg)
    if pair.A.shape[0] == 0:
        msg = f"pair {pair.name!r}: rank must be >= 1; got A of shape {tuple(pair.A.shape)}"
        raise ValueError(msg)


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


def adjusted_grads(pairs, grads_A, grads_B, *, gauge, damping):
    """LoRA-Pro adjusted (grad_A, grad_B) per pair, in the compute dtype (views of stacks).

    Pairs of one shape are stacked; all pairs of one rank share one r×r stage. The
    core is called without re-validation (pairs were checked when resolved); NaN/Inf
    gradients propagate to the result exactly as in ``torch.optim.AdamW``.
    """  # numpydoc ignore=PR01,RT01
    if not pairs:
        return [], []
    layout = Layout(pairs)
    grads = [grads_A[i] for i in layout.order] + [grads_B[i] for i in layout.order]
    layout.load(grads)
    for buckets in layout.ranks:
        coefs, _ = coefficients(buckets, gauge=gauge, damping=damping)
        adjusted(buckets, coefs)  # into each bucket's `new`
    return layout.grads_in_input_order([b.new for b in layout.buckets])


def check_damping(damping: Any) -> Any:
    """Validate `damping` as the core does ("auto", a float >= 0 or None)."""  # numpydoc ignore=PR01,RT01
    return _check_damping(damping)
