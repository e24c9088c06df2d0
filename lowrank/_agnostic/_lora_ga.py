"""LoRA-GA initialisation bodies (docs/theory/lora_ga.md): gradient SVD, index sets, scales.

Pure array API with explicit ``xp``. Performs no input validation.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ._lora_ga_krylov import lean_krylov_triplets
from ._operator import as_operator
from ._randomized import randomized_svd

__all__ = [
    "FactorPlan",
    "clip_to_weight",
    "lora_ga_factors",
    "spectral_gaps",
    "svd_defaults",
    "top_triplets",
    "weight_scale",
]


class FactorPlan(NamedTuple):
    """Validated options of one ``lora_ga_init`` call."""  # numpydoc ignore=PR01

    rank: int
    scaling: float
    direction: str
    scale: str
    stable_gamma: float
    compat: str


def svd_defaults(rank: int, n_oversamples: int | None, n_power_iter: int | None) -> tuple[int, int]:
    """Return LoRA-GA's block Krylov ``(block width, depth)``: the [r, 2r) block must be accurate.

    Default: blocks of ``max(16, r)`` columns, depth 4 when that is at least ``2r`` wide
    (small r) and 6 otherwise: a Krylov space of 7-10 r columns and degree 9-13 in the
    gradient, from 10-14 reads of it. Narrow, deep Krylov spaces resolve the tightly
    spaced singular vectors around index 2r far better per column-product than wide,
    shallow ones, and a CPU GEMM with 16 columns costs little more than one with 8 (from
    4 columns up, a product with a 4096 x 4096 float32 gradient takes at least ~11 ms on
    one core; ``bench/compare.py lora_ga --evidence``). Measured against the exact block on float32
    gradients with a 1/i spectrum (``bench/peers/compare_lora_ga.py``): largest
    principal-angle sine 3e-4 to 1.5e-3 at r = 8 and 32 (384 to 11008 wide), against
    PEFT's ``svd_lowrank(q=4r, niter=4)`` (10 reads of 4r columns) at 1e-3 to 6.5e-3.
    ``n_oversamples`` given: block width ``2r + n_oversamples`` (the wide-block layout).
    """  # numpydoc ignore=PR01,RT01
    block = max(16, rank) if n_oversamples is None else 2 * rank + n_oversamples
    if n_power_iter is not None:
        return block, n_power_iter
    return block, 4 if block >= 2 * rank else 6


def top_triplets(
    g: Any, k: int, *, svd: str, block: int, depth: int, rand: Any, xp: Any
) -> tuple[Any, Any, Any]:
    """Leading ``k`` singular triplets of ``g`` (..., m, n), exact or randomized.

    Randomized: a block Krylov SVD with blocks of width ``block`` and depth ``depth``
    (see :func:`svd_defaults`). Real gradients whose short side holds the Krylov space
    take the lean variant (``_lora_ga_krylov``; its light bookkeeping is what makes
    384-1536-wide layers fast). Where it declines (a numerically rank-deficient space,
    an unresolved σ_k) or does not apply: the library's general
    :func:`lowrank._agnostic._randomized.randomized_svd`, or the exact SVD when the
    space spans at least half of min(m, n) (cheaper there, no sampling error). The
    exact SVD also when the Krylov space is narrower than ``k``.
    Performs no input validation.
    """  # numpydoc ignore=PR01,RT01
    m, n = g.shape[-2], g.shape[-1]
    width = min(block, m, n)
    krylov_dim = width * (depth + 1)
    if svd != "exact" and krylov_dim >= k:
        if krylov_dim <= min(m, n) and xp.isdtype(g.dtype, "real floating"):
            lean = lean_krylov_triplets(g, k, block=width, depth=depth, rand=rand, xp=xp)
            if lean is not None:
                return lean
        if 2 * krylov_dim < min(m, n):
            return _general_triplets(g, k, width, depth, rand, xp)
    from .._svd import truncated_svd

    return tuple(truncated_svd(g, k, check_finite=False, xp=xp))  # type: ignore[return-value]


def _general_triplets(g: Any, k: int, width: int, depth: int, rand: Any, xp: Any) -> Any:
    """The library's block Krylov randomized SVD on the short side of ``g``."""  # numpydoc ignore=PR01,RT01
    op = as_operator(g, xp, g.dtype)
    return randomized_svd(
        op.T if op.m < op.n else op, k, n_oversamples=0,
        n_power_iter=depth, method="block_krylov", block_size=width, rand=rand, xp=xp)


def spectral_gaps(S: Any, rank: int, rtol: float, xp: Any) -> tuple[Any, Any]:
    """``(σ_r/σ_{r+1}, σ_2r/σ_{2r+1})`` (1-based) per matrix.

    Singular values below ``rtol * σ_1`` count as zero (numerical rank): a ratio of two
    zeros is nan (the gradient has rank < index; the vectors there are arbitrary), a
    nonzero over zero is inf, as is an index past the last σ. Performs no input
    validation.
    """  # numpydoc ignore=PR01,RT01
    S = xp.where(rtol * S[..., :1] < S, S, xp.zeros_like(S))

    def ratio(i: int) -> Any:
        top = S[..., i - 1]
        if S.shape[-1] <= i:
            return xp.full_like(top, math.inf)
        den = S[..., i]
        quotient = top / xp.where(den > 0, den, xp.ones_like(den))
        undefined = xp.where(top > 0, xp.full_like(top, math.inf), xp.full_like(top, math.nan))
        return xp.where(den > 0, quotient, undefined)

    return ratio(rank), ratio(2 * rank)


def _index_sets(plan: FactorPlan, perm: Any) -> tuple[Any, Any]:
    """Index sets (J_A, J_B) as slices, or index arrays for "random" (the ``direction`` table)."""  # numpydoc ignore=PR01,RT01
    r = plan.rank
    if plan.direction == "ArB2r":
        return slice(0, r), slice(r, 2 * r)
    if plan.direction == "A2rBr":
        return slice(r, 2 * r), slice(0, r)
    if plan.direction == "ArBr":
        return slice(1, 2 * r, 2), slice(0, 2 * r, 2)
    if plan.compat == "peft":  # PEFT shares one index set between A and B
        return perm[..., :r], perm[..., :r]
    return perm[..., :r], perm[..., r : 2 * r]


def _take_rows(x: Any, idx: Any, xp: Any) -> Any:
    """``x[..., idx, :]`` for a slice or a per-matrix (..., r) index array."""  # numpydoc ignore=PR01,RT01
    if isinstance(idx, slice):
        return x[..., idx, :]
    full = xp.broadcast_to(idx[..., :, None], (*idx.shape, x.shape[-1]))
    return xp.take_along_axis(x, full, axis=-2)


def _take_values(s: Any, idx: Any, xp: Any) -> Any:
    """``s[..., idx]`` for a slice or a per-matrix index array."""  # numpydoc ignore=PR01,RT01
    return s[..., idx] if isinstance(idx, slice) else xp.take_along_axis(s, idx, axis=-1)


def lora_ga_factors(
    U: Any, S: Any, Vh: Any, plan: FactorPlan, perm: Any, wscale: Any, xp: Any
) -> tuple[Any, Any]:
    """``(A0, B0)`` from the gradient's top-2r triplets: index sets, then scale.

    ``perm`` is a (..., 2r) permutation for ``direction="random"`` (else None) and
    ``wscale`` the per-matrix weight-SVD factor for ``scale="weight_svd"``.
    Performs no input validation.
    """  # numpydoc ignore=PR01,RT01
    JA, JB = _index_sets(plan, perm)
    A = _take_rows(Vh, JA, xp)
    B = xp.matrix_transpose(_take_rows(xp.matrix_transpose(U), JB, xp))
    S_B = _take_values(S, JB, xp)
    if plan.compat == "peft":
        B = B * S_B[..., None, :]  # PEFT: B0 carries the singular values
    zeta = U.shape[-2] ** 0.25 / math.sqrt(plan.stable_gamma)
    if plan.scale == "stable":
        return (A, B * zeta) if plan.compat == "peft" else (A * zeta, B * zeta)
    if plan.scale == "gd_scale":
        return A / plan.scaling, B / plan.scaling
    if plan.scale == "weight_svd":
        if plan.compat == "peft":  # B0 * sigma_1(W) / S_B[0], skipped where S_B[0] == 0
            lead = S_B[..., :1]
            safe = xp.where(lead > 0, lead, xp.ones_like(lead))
            factor = xp.where(lead > 0, wscale[..., None] / safe, xp.ones_like(lead))
            return A, B * factor[..., None, :]
        return A * wscale[..., None, None], B * wscale[..., None, None]
    return A, B


def weight_scale(sw: Any, plan: FactorPlan, xp: Any) -> Any:
    """Per-matrix weight-SVD factor from the top singular values ``sw`` (..., r) of W.

    Official code: mean over i < r of sqrt(σ_i(W) / s); PEFT: σ_1(W).
    Performs no input validation.
    """  # numpydoc ignore=PR01,RT01
    if plan.compat == "peft":
        return sw[..., 0]
    return xp.mean(xp.sqrt(sw[..., : plan.rank] / plan.scaling), axis=-1)


def clip_to_weight(A: Any, B: Any, weight: Any, scaling: float, xp: Any) -> tuple[Any, Any]:
    """Official ``norm_clip``: shrink the offset ``s B A`` to the weight's largest entry.

    ``ratio = max|W| / max|s B A|`` per matrix; where it is below 1 both factors are
    multiplied by ``sqrt(ratio)`` (so the offset by ``ratio``). A zero offset is left alone.
    """  # numpydoc ignore=PR01,RT01
    offset = scaling * (B @ A)
    top_w = xp.max(xp.abs(weight), axis=(-2, -1))
    top_o = xp.max(xp.abs(offset), axis=(-2, -1))
    ratio = xp.where(top_o > top_w, top_w / xp.where(top_o > 0, top_o, 1.0), 1.0)
    root = xp.astype(xp.sqrt(ratio), A.dtype)[..., None, None]
    return A * root, B * root

