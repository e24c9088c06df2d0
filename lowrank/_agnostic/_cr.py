"""CR (column-row) approximation of a product a @ b: pure array-API bodies."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from .._lib._compat import device
from . import _cr_error as _error
from . import _cr_sampling as _sampling
from . import _cr_scale as _scale

__all__ = [
    "CRPlan",
    "expected_error",
    "factors",
    "gather_scale",
    "merge_repeats",
    "norms",
    "probabilities",
    "product",
    "product_fro2",
]


class CRPlan(NamedTuple):
    """Validated options of one cr_factors call."""  # numpydoc ignore=PR01

    rank: int
    method: str  # "sample" | "topk"
    probabilities: Any  # "optimal" | "uniform" | float64 array of shape (..., l)
    replace: bool
    rescale: str  # "none" | "diagonal"


def norms(a: Any, b: Any, xp: Any) -> tuple[Any, Any]:
    """Column norms of ``a`` and row norms of ``b``, shapes (..., l)."""  # numpydoc ignore=PR01,RT01
    return xp.linalg.vector_norm(a, axis=-2), xp.linalg.vector_norm(b, axis=-1)


def gather_scale(
    a: Any, b: Any, idx: Any, col_scale: Any, row_scale: Any, xp: Any
) -> tuple[Any, Any]:
    """``C = a[:, idx] * col_scale``, ``R = b[idx, :] * row_scale[:, None]`` (2-D)."""  # numpydoc ignore=PR01,RT01
    C = xp.take(a, idx, axis=1) * col_scale
    R = xp.take(b, idx, axis=0) * row_scale[:, None]
    return C, R


def probabilities(kind: Any, w: Any, xp: Any) -> Any:
    """Float64 sampling probabilities over the last axis of the weights ``w``."""  # numpydoc ignore=PR01,RT01
    inner = w.shape[-1]
    if not isinstance(kind, str):  # user array, validated: normalise away round-off
        p = xp.astype(kind, xp.float64)
        return p / xp.sum(p, axis=-1, keepdims=True) if inner > 0 else p
    uniform = xp.full(w.shape, 1.0 / max(inner, 1), dtype=xp.float64, device=device(w))
    if kind == "uniform":
        return uniform
    total = xp.sum(w, axis=-1, keepdims=True)
    # all-zero weights mean a @ b == 0; uniform p then gives exactly 0 as well
    return xp.where(total > 0, w / xp.where(total > 0, total, 1.0), uniform)


def _weights(na: Any, nb: Any, xp: Any) -> Any:
    """‖a_i‖·‖b_i‖ in float64."""  # numpydoc ignore=PR01,RT01
    return xp.astype(na, xp.float64) * xp.astype(nb, xp.float64)


def diagonal_weights(a: Any, b: Any, idx: Any, xp: Any) -> Any:
    """Optimal λ for a fixed selection via the Hadamard identities (docs: theory/cr)."""  # numpydoc ignore=PR01,RT01
    # λ* is invariant under a -> a/sa, b -> b/sb: scale both to entries of size ~1 so
    # that the Gram entries (~‖a_i‖²‖b_i‖²) can neither overflow nor underflow
    a, b = _scale.normalized(a, xp), _scale.normalized(b, xp)
    C = xp.take(a, idx, axis=1)
    R = xp.take(b, idx, axis=0)
    gram = (C.mT @ C) * (R @ R.mT)  # UᵀU = (CᵀC) ∘ (RRᵀ)
    rhs = xp.sum((C.mT @ a) * (R @ b.mT), axis=1)  # UᵀV1 = rowsum((CᵀX) ∘ (RYᵀ)); no a @ b
    gram64, rhs64 = xp.astype(gram, xp.float64), xp.astype(rhs, xp.float64)
    if _well_posed(gram64, xp):  # distinct, independent outer products: one LU solve
        return xp.linalg.solve(gram64, rhs64[:, None])[:, 0]
    # pseudo-inverse: duplicated indices make UᵀU singular; the minimum-norm λ splits
    # them evenly. UᵀU is symmetric PSD, so its eigendecomposition gives the same
    # pseudo-inverse as pinv's SVD (cut-off r·eps·λ_max) at about a third of the flops.
    evals, evecs = xp.linalg.eigh(gram64)
    cutoff = float(xp.max(evals)) * gram64.shape[0] * float(xp.finfo(xp.float64).eps)
    keep = evals > cutoff
    inv = xp.where(keep, 1.0 / xp.where(keep, evals, 1.0), 0.0)
    return evecs @ (inv * (evecs.mT @ rhs64))


def _well_posed(gram: Any, xp: Any) -> bool:
    """Cholesky succeeds with pivots far above round-off: κ(gram) ≳ (max/min pivot)²."""  # numpydoc ignore=PR01,RT01
    try:
        piv = xp.linalg.diagonal(xp.linalg.cholesky(gram))
    except (ValueError, RuntimeError):  # numpy/strict LinAlgError, torch LinAlgError
        return False
    top, low = float(xp.max(piv)), float(xp.min(piv))
    if not (math.isfinite(top) and math.isfinite(low)) or top <= 0:
        return False
    # a pivot ratio beyond eps^(-1/4) (κ > 1e8) hands over to the pseudo-inverse
    return (low / top) ** 4 > float(xp.finfo(xp.float64).eps)


def diagonal_costs_more(n: int, inner: int, m: int, rank: int) -> bool:
    """Whether a diagonally rescaled CR product would cost about as much as ``a @ b``.

    Flop counts: ``Cᵀa`` and ``R bᵀ`` (2 r l (n + m)), the two r×r Gram matrices
    (2 r² (n + m)), the solve (~9 r³ at worst) and the product (2 n r m), against
    ``2 n l m`` for the exact product. Measured with single-threaded BLAS
    (``bench/peers/cr_real_data.py --crossover``), the passes over the inputs add
    0.15-0.5 of the exact product's time on top of these flops, hence the factor 1/2.
    """  # numpydoc ignore=PR01,RT01
    r = min(rank, inner)
    rescaled = 2 * r * (inner + r) * (n + m) + 9 * r**3 + 2 * n * r * m
    return rescaled >= _DIAGONAL_MARGIN * 2 * n * inner * m


_DIAGONAL_MARGIN = 0.5


def _select(
    a: Any, b: Any, w: Any, p: Any, plan: CRPlan, rand: Any, xp: Any, merge: bool
) -> tuple[Any, Any]:
    """Indices and λ for one 2-D problem; ``merge`` folds repeated draws together."""  # numpydoc ignore=PR01,RT01
    if plan.method == "auto":
        plan = plan._replace(method=_error.choose_method(a, b, w, p, plan.rank, rand, xp))
    if plan.method == "topk":
        idx, lam = _sampling.topk_indices(w, plan.rank, xp)
    elif plan.replace:
        idx, lam = _sampling.iid_indices(p, plan.rank, rand, xp)
        if merge:  # (before a diagonal rescale too: repeats add nothing to its span)
            idx, lam = merge_repeats(idx, lam, xp)
    else:
        idx, lam = _sampling.without_replacement(p, plan.rank, rand, xp)
    if plan.rescale == "diagonal":
        lam = diagonal_weights(a, b, idx, xp)
    return idx, lam


def merge_repeats(idx: Any, lam: Any, xp: Any) -> tuple[Any, Any]:
    """Sorted indices with repeats -> distinct indices, weights times multiplicity.

    Repeated i.i.d. draws of index i all carry λ = 1/(r p_i), so Σ_j λ_j x_{s_j} y_{s_j}ᵀ
    equals Σ_distinct (count_i λ_i) x_i y_iᵀ: the same estimate from fewer columns.
    """  # numpydoc ignore=PR01,RT01
    k = idx.shape[0]
    if k <= 1:
        return idx, lam
    first = xp.concat((xp.ones((1,), dtype=xp.bool, device=device(idx)), idx[1:] != idx[:-1]))
    if bool(xp.all(first)):
        return idx, lam
    starts = xp.nonzero(first)[0]
    ends = xp.concat((starts[1:], xp.asarray([k], dtype=starts.dtype, device=device(idx))))
    counts = xp.astype(ends - starts, lam.dtype)
    return xp.take(idx, starts), xp.take(lam, starts) * counts


def _factors_2d(
    a: Any,
    b: Any,
    w: Any,
    p: Any,
    plan: CRPlan,
    rand: Any,
    gather: Callable[..., Any],
    xp: Any,
    merge: bool = False,
) -> tuple[Any, ...]:
    """CRFactors fields for one 2-D problem."""  # numpydoc ignore=PR01,RT01
    if a.shape[1] == 0:  # l = 0: a @ b is exactly zero, nothing to select
        idx = xp.zeros((0,), dtype=xp.int64, device=device(a))
        lam = xp.zeros((0,), dtype=xp.float64, device=device(a))
    else:
        idx, lam = _select(a, b, w, p, plan, rand, xp, merge)
    # λ = sign·|λ|: both factors carry sqrt|λ|, the sign goes on C
    mag = xp.sqrt(xp.abs(lam))
    col = xp.astype(xp.where(lam < 0, -mag, mag), a.dtype)
    C, R = gather(a, b, idx, col, xp.astype(mag, a.dtype))
    return C, R, idx, xp.astype(lam, a.dtype)


def _problems(a: Any, b: Any, na: Any, nb: Any, plan: CRPlan, xp: Any) -> tuple[Any, list]:
    """Batch shape and the per-matrix (a, b, w, p) problems, in draw order."""  # numpydoc ignore=PR01,RT01
    w = None if na is None else _weights(na, nb, xp)
    p = (
        None
        if plan.method == "topk"
        else probabilities(plan.probabilities, w if w is not None else _uniform_like(a, xp), xp)
    )
    if a.ndim == 2:
        return (), [(a, b, w, p)]
    count = math.prod(a.shape[:-2])  # explicit: reshape(-1, ...) is ambiguous at size 0
    a3 = xp.reshape(a, (count, *a.shape[-2:]))
    b3 = xp.reshape(b, (count, *b.shape[-2:]))
    w3 = None if w is None else xp.reshape(w, (count, w.shape[-1]))
    p3 = None if p is None else xp.reshape(p, (count, p.shape[-1]))
    return a.shape[:-2], [
        (
            a3[k, ...],
            b3[k, ...],
            None if w3 is None else w3[k, ...],
            None if p3 is None else p3[k, ...],
        )
        for k in range(a3.shape[0])
    ]


def _unbatch(batch: tuple[int, ...], parts: list, xp: Any) -> Any:
    """Stack per-matrix results back into the batch shape."""  # numpydoc ignore=PR01,RT01
    if not batch:
        return parts[0]
    stacked = xp.stack(parts, axis=0)
    return xp.reshape(stacked, (*batch, *stacked.shape[1:]))


def _empty_problem(a: Any, b: Any, plan: CRPlan, xp: Any) -> tuple[Any, ...]:
    """A zero 2-D problem of the batch's matrix shape: gives the fields' shapes and dtypes
    for an empty batch (nothing is drawn from it that a caller could see)."""  # numpydoc ignore=PR01,RT01
    a0 = xp.zeros(a.shape[-2:], dtype=a.dtype, device=device(a))
    b0 = xp.zeros(b.shape[-2:], dtype=b.dtype, device=device(b))
    w0 = xp.zeros((a.shape[-1],), dtype=xp.float64, device=device(a))
    p0 = None if plan.method == "topk" else probabilities("uniform", w0, xp)
    return a0, b0, w0, p0



def factors(
    a: Any, b: Any, na: Any, nb: Any, plan: CRPlan, rand: Any, gather: Callable[..., Any], xp: Any
) -> tuple[Any, ...]:
    """(C, R, indices, weights) for (..., n, l) @ (..., l, m); batches drawn in order."""  # numpydoc ignore=PR01,RT01
    batch, problems = _problems(a, b, na, nb, plan, xp)
    parts = [_factors_2d(*prob, plan, rand, gather, xp) for prob in problems]
    if batch and not problems:  # empty batch: zero-size fields shaped like one matrix's
        one = _factors_2d(*_empty_problem(a, b, plan, xp), plan, rand, gather, xp)
        return tuple(xp.reshape(f[None, ...][:0, ...], (*batch, *f.shape)) for f in one)
    return tuple(_unbatch(batch, list(field), xp) for field in zip(*parts, strict=True))


def product(
    a: Any, b: Any, na: Any, nb: Any, plan: CRPlan, rand: Any, gather: Callable[..., Any], xp: Any
) -> Any:
    """``C @ R`` with repeated draws merged (same draws as :func:`factors`)."""  # numpydoc ignore=PR01,RT01
    batch, problems = _problems(a, b, na, nb, plan, xp)
    parts = []
    for prob in problems:
        C, R, _, _ = _factors_2d(*prob, plan, rand, gather, xp, merge=True)
        parts.append(C @ R)
    if batch and not problems:
        shape = (*batch, a.shape[-2], b.shape[-1])
        return xp.zeros(shape, dtype=a.dtype, device=device(a))
    return _unbatch(batch, parts, xp)


def _uniform_like(a: Any, xp: Any) -> Any:
    """Placeholder weights of shape (..., l) when no norms were needed (uniform p)."""  # numpydoc ignore=PR01,RT01
    return xp.ones((*a.shape[:-2], a.shape[-1]), dtype=xp.float64, device=device(a))


def product_fro2(a: Any, b: Any, xp: Any) -> Any:
    """‖a @ b‖_F² in float64, through 1ᵀ[(aᵀa) ∘ (bbᵀ)]1 when that is cheaper."""  # numpydoc ignore=PR01,RT01
    a, b = xp.astype(a, xp.float64), xp.astype(b, xp.float64)
    n, inner, m = a.shape[-2], a.shape[-1], b.shape[-1]
    if inner * (n + m) < n * m:
        return xp.sum((a.mT @ a) * (b @ b.mT), axis=(-2, -1))
    prod = a @ b
    return xp.sum(prod * prod, axis=(-2, -1))


def expected_error(a: Any, b: Any, na: Any, nb: Any, rank: int, kind: Any, xp: Any) -> Any:
    """E‖C R − a b‖_F² of ``rank`` i.i.d. draws, float64, shape (...)."""  # numpydoc ignore=PR01,RT01
    w = _weights(na, nb, xp)
    p = probabilities(kind, w, xp)
    positive = p > 0
    # 0/0 terms read as 0 (a zero outer product is never missed); validation rejected p_i = 0 with w_i > 0
    terms = xp.where(positive, (w * w) / xp.where(positive, p, 1.0), 0.0)
    err = (xp.sum(terms, axis=-1) - product_fro2(a, b, xp)) / rank
    return xp.maximum(err, 0.0)  # ≥ 0 in exact arithmetic (Cauchy–Schwarz); clip round-off
