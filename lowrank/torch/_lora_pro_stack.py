"""Stacked storage for LoRA-Pro on torch: the layers of one shape share one buffer.

Per call, the per-layer work is one ``_foreach_copy_`` in (factors and gradients) and
one out; the rest runs on stacks. ``[A; g_A]`` (n, 2r, in) and ``[Bᵀ; g_Bᵀ]``
(n, 2r, out) make the four r×r products of every layer of a shape two batched matmuls,
one float64 ``eigh`` serves every layer of a rank, and the adjusted gradients are two
more: ``g_A' = [X | C_A][A; g_A]`` and ``g_B'ᵀ = [−(M_B + X)ᵀ | C_Bᵀ][Bᵀ; g_Bᵀ]``.
B is kept transposed so that both products have a short (r-row) output, the fast
shape for MKL's batched products (a tall (out, r) output measured ~3x slower), and so
that each layer's Bᵀ, g_B'ᵀ and B-side optimizer states are contiguous blocks.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from .._agnostic import _lora_pro as _ag

__all__ = ["Bucket", "Layout", "adjusted", "coefficients", "equivalent", "split"]


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """Return the compute dtype: float64, else float32."""  # numpydoc ignore=PR01,RT01
    return torch.float64 if t.dtype == torch.float64 else torch.float32


class Bucket:
    """Pairs of one shape, device and compute dtype, stacked (see the module docstring)."""

    def __init__(self, pairs: list, dtype: torch.dtype, key: tuple) -> None:
        A, B = pairs[0].A, pairs[0].B
        r, n_in = A.shape
        n, out = len(pairs), B.shape[0]
        self.pairs, self.r, self.key = pairs, r, key
        self.AgA = torch.zeros((n, 2 * r, n_in), dtype=dtype, device=A.device)
        self.BgBt = torch.zeros((n, 2 * r, out), dtype=dtype, device=A.device)
        self.A, self.gA = self.AgA[:, :r], self.AgA[:, r:]
        self.Bt, self.gBt = self.BgBt[:, :r], self.BgBt[:, r:]
        # outputs of `adjusted`, reused: (n, r, in) and (n, r, out)
        new_A = torch.empty((n, r, n_in), dtype=dtype, device=A.device)
        self.new = (new_A, torch.empty((n, r, out), dtype=dtype, device=A.device))
        s = torch.tensor([p.scaling for p in pairs], dtype=torch.float64)
        self.scaling = s.to(A.device)[:, None, None]
        self.inv_s2 = 1.0 / (self.scaling * self.scaling)
        self.slabs: dict[str, torch.Tensor] = {}  # optimizer states stacked like A or Bᵀ
        self.blocks: dict[tuple, list] = {}  # their per-layer blocks, for list kernels
        self.scratch: torch.Tensor | None = None  # full mode's g~ and direction chunks


class Layout:
    """Buckets of a list of pairs, with the per-layer views used to fill and drain them.

    ``key(pair)`` adds to the shape key (the optimizer passes the param groups, so that
    a bucket never mixes hyper-parameters).
    """

    def __init__(self, pairs: list, key: Callable[[Any], tuple] = lambda p: ()) -> None:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, p in enumerate(pairs):
            shape_key = (tuple(p.A.shape), tuple(p.B.shape), p.A.device, compute_dtype(p.A))
            groups[(*shape_key, *key(p))].append(i)
        self.order = [i for idx in groups.values() for i in idx]  # bucket order -> input index
        self.buckets = [Bucket([pairs[i] for i in idx], k[3], k) for k, idx in groups.items()]
        bs = self.buckets
        self.params = [p.A for b in bs for p in b.pairs] + [p.B for b in bs for p in b.pairs]
        self.param_views = [*(v for b in bs for v in b.A), *(v.mT for b in bs for v in b.Bt)]
        self.grad_views = [*(v for b in bs for v in b.gA), *(v.mT for b in bs for v in b.gBt)]
        ranks: dict[tuple, list[Bucket]] = defaultdict(list)
        for b in bs:  # one r×r stage (one eigh) per rank, device and dtype
            ranks[(b.r, b.AgA.device, b.AgA.dtype)].append(b)
        self.ranks = list(ranks.values())

    def load(self, grads: list | None = None) -> None:
        """Copy the factors and ``grads`` (default: their ``.grad``; None is 0) into the stacks."""  # numpydoc ignore=PR01
        torch._foreach_copy_(self.param_views, self.params)
        if grads is None:
            grads = [t.grad for t in self.params]
        if any(g is None for g in grads):
            slots = list(zip(self.grad_views, grads, strict=True))
            torch._foreach_zero_([v for v, g in slots if g is None])
            views = [v for v, g in slots if g is not None]
            grads = [g for _, g in slots if g is not None]
        else:
            views = self.grad_views
        if views:
            torch._foreach_copy_(views, grads)

    def store(self) -> None:
        """Copy the stacked factors back into the parameters (rounding to their dtype)."""
        torch._foreach_copy_(self.params, self.param_views)

    def grads_in_input_order(self, stacked: list[tuple]) -> tuple[list, list]:
        """Per-pair views of per-bucket ``(new_A, new_B)`` stacks, in the input order."""  # numpydoc ignore=PR01,RT01
        flat = [(a[k], bt[k].mT) for a, bt in stacked for k in range(a.shape[0])]
        out: list[Any] = [None] * len(flat)
        for pos, i in enumerate(self.order):
            out[i] = flat[pos]
        return [a for a, _ in out], [b for _, b in out]


@functools.cache
def _torch_namespace() -> Any:
    """The array-api-compat namespace of torch tensors."""  # numpydoc ignore=RT01
    import array_api_compat

    return array_api_compat.array_namespace(torch.empty(0))


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def coefficients(buckets: list[Bucket], *, gauge: str, damping: Any, spec: Any = None):
    """Float64 r×r coefficients ``(CA, CB, MB, X)`` of every layer of ``buckets`` (one rank).

    One batched matmul per factor and bucket forms the Grams and the gradient products;
    one ``eigh`` call (skipped when ``spec``, the spectra of the same factors, is given)
    serves all layers. Returns the coefficients, concatenated in bucket order, and the
    spectra.
    """  # numpydoc ignore=PR01,RT01
    r = buckets[0].r
    xp = _torch_namespace()
    # Bᵀ[Bᵀ; g_Bᵀ]ᵀ = [S_B | Bᵀg_B] and (A [A; g_A]ᵀ)ᵀ = [S_A ; g_A Aᵀ]
    left = [b.Bt @ b.BgBt.mT for b in buckets]
    right = [(b.A @ b.AgA.mT).mT for b in buckets]
    if spec is None:
        S = torch.stack([_cat([g[..., :r] for g in left]), _cat([g[:, :r] for g in right])])
        eps = float(torch.finfo(buckets[0].AgA.dtype).eps)
        damping = 0.0 if damping is None else damping
        spec = _ag.spectra_of_grams(S, eps, damping, xp)
    inv_s2 = _cat([b.inv_s2 for b in buckets])
    BtgB, gAAt = _cat([g[..., r:] for g in left]), _cat([g[:, r:] for g in right])
    return _ag.coefficients(BtgB, gAAt, spec, inv_s2, gauge, xp), spec


def split(coefs: tuple, buckets: list[Bucket]) -> list[tuple]:
    """Per-bucket slices of concatenated coefficients."""  # numpydoc ignore=PR01,RT01
    out, lo = [], 0
    for b in buckets:
        hi = lo + len(b.pairs)
        out.append(tuple(None if c is None else c[lo:hi] for c in coefs))
        lo = hi
    return out


def adjusted(buckets: list[Bucket], coefs: tuple) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Stacked ``(g_A', g_B'ᵀ)`` per bucket (one rank), written into each ``bucket.new``.

    The mixing matrices ``[X | C_A]`` and ``[−(M_B + X)ᵀ | C_Bᵀ]`` are formed for all
    layers at once; each bucket then needs two batched products.
    """  # numpydoc ignore=PR01,RT01
    CA, CB, MB, X = coefs
    X = torch.zeros_like(MB) if X is None else X
    dt = buckets[0].AgA.dtype
    mix_A = torch.cat([X, CA], dim=-1).to(dt)
    mix_B = torch.cat([-(MB + X).mT, CB.mT], dim=-1).to(dt)
    out = []
    for b, (mA, mB) in zip(buckets, split((mix_A, mix_B), buckets), strict=True):
        new_A, new_Bt = b.new
        torch.matmul(mA, b.AgA, out=new_A)
        torch.matmul(mB, b.BgBt, out=new_Bt)
        out.append(b.new)
    return out


def equivalent(bucket: Bucket, coefs: tuple, lo: int, hi: int, out: Any = None) -> torch.Tensor:
    """Equivalent gradients g~ (hi − lo, out, in) of layers lo:hi, from zero-gauge coefficients.

    g~ = s(B a0 + b0 A) = [B | g_B] [s C_A g_A − s M_B A ; s C_B A]: a small matmul
    and one of inner dimension 2r (``[B | g_B]`` is ``[Bᵀ; g_Bᵀ]ᵀ``).
    """  # numpydoc ignore=PR01,RT01
    CA, CB, MB, _ = (None if c is None else c[lo:hi] for c in coefs)
    s = bucket.scaling[lo:hi]
    top = torch.cat([-s * MB, s * CA], dim=-1)
    bottom = torch.cat([s * CB, torch.zeros_like(CB)], dim=-1)
    mix = torch.cat([top, bottom], dim=-2).to(bucket.AgA.dtype)
    right = mix @ bucket.AgA[lo:hi]
    if out is None:
        shape = (hi - lo, bucket.BgBt.shape[2], right.shape[2])
        out = torch.empty(shape, dtype=right.dtype, device=right.device)
    # One GEMM per layer: measured 1.6x faster than the batched product here (in cache),
    # and 3x faster than a batched product with the transposed left operand [B | g_B].
    for k in range(hi - lo):
        torch.mm(bucket.BgBt[lo + k].mT, right[k], out=out[k])
    return out
