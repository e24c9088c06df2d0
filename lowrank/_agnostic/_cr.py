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
    "norms",
    "probabilities",
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


def _select(a: Any, b: Any, w: Any, p: Any, plan: CRPlan, rand: Any, xp: Any) -> tuple[Any, Any]:
    """Indices and λ for one 2-D problem."""  # numpydoc ignore=PR01,RT01
    if plan.method == "topk":
        idx, lam = _sampling.topk_indices(w, plan.rank, xp)
    elif plan.replace:
        idx, lam = _sampling.iid_indices(p, plan.rank, rand, xp)
    else:
        idx, lam = _sampling.without_replacement(p, plan.rank, rand, xp)
    if plan.rescale == "diagonal":
        lam = diagonal_weights(a, b, idx, xp)
    return idx, lam


def _factors_2d(
    a: Any, b: Any, w: Any, p: Any, plan: CRPlan, rand: Any, gather: Callable[..., Any], xp: Any
) -> tuple[Any, ...]:
    """CRFactors fields for one 2-D problem (SPEC §3.3-3.4, §3.8)."""  # numpydoc ignore=PR01,RT01
    if a.shape[1] == 0:  # l = 0: a @ b is exactly zero, nothing to select
        idx = xp.zeros((0,), dtype=xp.int64, device=device(a))
        lam = xp.zeros((0,), dtype=xp.float64, device=device(a))
    else:
        idx, lam = _select(a, b, w, p, plan, rand, xp)
    # λ = sign·|λ|: both factors carry sqrt|λ|, the sign goes on C (D5 for λ > 0)
    mag = xp.sqrt(xp.abs(lam))
    col = xp.astype(xp.where(lam < 0, -mag, mag), a.dtype)
    C, R = gather(a, b, idx, col, xp.astype(mag, a.dtype))
    return C, R, idx, xp.astype(lam, a.dtype)


def factors(
    a: Any, b: Any, na: Any, nb: Any, plan: CRPlan, rand: Any, gather: Callable[..., Any], xp: Any
) -> tuple[Any, ...]:
    """(C, R, indices, weights) for (..., n, l) @ (..., l, m); batches drawn in order."""  # numpydoc ignore=PR01,RT01
    w = None if na is None else _weights(na, nb, xp)
    p = (
        None
        if plan.method == "topk"
        else probabilities(plan.probabilities, w if w is not None else _uniform_like(a, xp), xp)
    )
    if a.ndim == 2:
        return _factors_2d(a, b, w, p, plan, rand, gather, xp)
    batch = a.shape[:-2]
    a3 = xp.reshape(a, (-1, *a.shape[-2:]))
    b3 = xp.reshape(b, (-1, *b.shape[-2:]))
    w3 = None if w is None else xp.reshape(w, (-1, w.shape[-1]))
    p3 = None if p is None else xp.reshape(p, (-1, p.shape[-1]))
    parts = [
        _factors_2d(
            a3[k, ...],
            b3[k, ...],
            None if w3 is None else w3[k, ...],
            None if p3 is None else p3[k, ...],
            plan,
            rand,
            gather,
            xp,
        )
        for k in range(a3.shape[0])
    ]
    out = []
    for field in zip(*parts, strict=True):
        stacked = xp.stack(field, axis=0)
        out.append(xp.reshape(stacked, (*batch, *stacked.shape[1:])))
    return tuple(out)


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
