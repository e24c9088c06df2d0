"""CR (column-row) approximation of a product a @ b: pure array-API bodies (SPEC §3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from .._lib._compat import device
from . import _cr_sampling as _sampling

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
    """float64 sampling probabilities over the last axis of the weights ``w`` (SPEC §3.6)."""  # numpydoc ignore=PR01,RT01
    inner = w.shape[-1]
    if not isinstance(kind, str):  # user array, validated: normalise away round-off
        p = xp.astype(kind, xp.float64)
        return p / xp.where(inner > 0, xp.sum(p, axis=-1, keepdims=True), 1.0)
    uniform = xp.full(w.shape, 1.0 / max(inner, 1), dtype=xp.float64, device=device(w))
    if kind == "uniform":
        return uniform
    total = xp.sum(w, axis=-1, keepdims=True)
    # D7: all-zero weights mean a @ b == 0; uniform p then gives exactly 0 as well
    return xp.where(total > 0, w / xp.where(total > 0, total, 1.0), uniform)


def _weights(na: Any, nb: Any, xp: Any) -> Any:
    """‖a_i‖·‖b_i‖ in float64."""  # numpydoc ignore=PR01,RT01
    return xp.astype(na, xp.float64) * xp.astype(nb, xp.float64)


def diagonal_weights(a: Any, b: Any, idx: Any, xp: Any) -> Any:
    """Optimal λ for a fixed selection via the Hadamard identities (SPEC §3.8, D6)."""  # numpydoc ignore=PR01,RT01
    C = xp.take(a, idx, axis=1)
    R = xp.take(b, idx, axis=0)
    gram = (C.mT @ C) * (R @ R.mT)  # UᵀU = (CᵀC) ∘ (RRᵀ)
    rhs = xp.sum((C.mT @ a) * (R @ b.mT), axis=1)  # UᵀV1 = rowsum((CᵀX) ∘ (RYᵀ)); no a @ b
    # pinv: duplicated indices make UᵀU singular; the minimum-norm λ splits them evenly
    gram64, rhs64 = xp.astype(gram, xp.float64), xp.astype(rhs, xp.float64)
    return xp.linalg.pinv(gram64) @ rhs64


def _select(
    a: Any, b: Any, w: Any, p: Any, plan: CRPlan, rand: Any, xp: Any, merge: bool
) -> tuple[Any, Any]:
    """Indices and λ for one 2-D problem; ``merge`` folds repeated draws together."""  # numpydoc ignore=PR01,RT01
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
    """CRFactors fields for one 2-D problem (SPEC §3.3-3.4, §3.8)."""  # numpydoc ignore=PR01,RT01
    if a.shape[1] == 0:  # l = 0: a @ b is exactly zero, nothing to select
        idx = xp.zeros((0,), dtype=xp.int64, device=device(a))
        lam = xp.zeros((0,), dtype=xp.float64, device=device(a))
    else:
        idx, lam = _select(a, b, w, p, plan, rand, xp, merge)
    # λ = sign·|λ|: both factors carry sqrt|λ|, the sign goes on C (D5 for λ > 0)
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
    a3 = xp.reshape(a, (-1, *a.shape[-2:]))
    b3 = xp.reshape(b, (-1, *b.shape[-2:]))
    w3 = None if w is None else xp.reshape(w, (-1, w.shape[-1]))
    p3 = None if p is None else xp.reshape(p, (-1, p.shape[-1]))
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


def factors(
    a: Any, b: Any, na: Any, nb: Any, plan: CRPlan, rand: Any, gather: Callable[..., Any], xp: Any
) -> tuple[Any, ...]:
    """(C, R, indices, weights) for (..., n, l) @ (..., l, m); batches drawn in order."""  # numpydoc ignore=PR01,RT01
    batch, problems = _problems(a, b, na, nb, plan, xp)
    parts = [_factors_2d(*prob, plan, rand, gather, xp) for prob in problems]
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
    return _unbatch(batch, parts, xp)


def _uniform_like(a: Any, xp: Any) -> Any:
    """Placeholder weights of shape (..., l) when no norms were needed (uniform p)."""  # numpydoc ignore=PR01,RT01
    return xp.ones((*a.shape[:-2], a.shape[-1]), dtype=xp.float64, device=device(a))


def product_fro2(a: Any, b: Any, xp: Any) -> Any:
    """‖a @ b‖_F² in float64, through 1ᵀ[(aᵀa) ∘ (bbᵀ)]1 when that is cheaper (SPEC §3.2)."""  # numpydoc ignore=PR01,RT01
    a, b = xp.astype(a, xp.float64), xp.astype(b, xp.float64)
    n, inner, m = a.shape[-2], a.shape[-1], b.shape[-1]
    if inner * (n + m) < n * m:
        return xp.sum((a.mT @ a) * (b @ b.mT), axis=(-2, -1))
    prod = a @ b
    return xp.sum(prod * prod, axis=(-2, -1))


def expected_error(a: Any, b: Any, na: Any, nb: Any, rank: int, kind: Any, xp: Any) -> Any:
    """E‖C R − a b‖_F² of ``rank`` i.i.d. draws (SPEC §3.5, D5), float64, shape (...)."""  # numpydoc ignore=PR01,RT01
    w = _weights(na, nb, xp)
    p = probabilities(kind, w, xp)
    positive = p > 0
    # 0/0 terms read as 0 (SPEC §3.9); validation rejected p_i = 0 with w_i > 0
    terms = xp.where(positive, (w * w) / xp.where(positive, p, 1.0), 0.0)
    err = (xp.sum(terms, axis=-1) - product_fro2(a, b, xp)) / rank
    return xp.maximum(err, 0.0)  # ≥ 0 in exact arithmetic (Cauchy–Schwarz); clip round-off
