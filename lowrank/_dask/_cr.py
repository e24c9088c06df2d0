"""CR products of dask arrays: norms in one graph execution, selection on the client.

The norms of the columns of ``a`` and the rows of ``b`` are reduced over the chunks in
one execution (each block reports, per column, its largest entry and the sum of squares
of the column scaled by that power of two, so nothing over- or underflows). The indices
and weights are then drawn on the client exactly as for NumPy input (same ``rng``, same
draws), and ``C``, ``R`` and ``C @ R`` are lazy dask arrays gathered from ``a`` and
``b``. Unknown chunk sizes along the outer dimensions are fine; the inner one must be
known.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.numpy as npx
import numpy as np

from .._agnostic import _cr as _agn
from .._lib._random import Random, check_rng
from .._lib._validation import check_bool, check_int
from ._graph import task

__all__ = ["cr_expected_error", "cr_factors", "cr_matmul", "cr_norms", "inputs"]


def inputs(a: Any, b: Any, xp: Any) -> tuple[Any, Any, Any]:
    """``(a, b, out dtype)`` as 2-D real dask arrays of one working dtype."""  # numpydoc ignore=PR01,RT01
    import dask.array as da

    if xp is not None:
        msg = f"`xp` must be None for dask arrays `a`, `b`; got {getattr(xp, '__name__', xp)}"
        raise TypeError(msg)
    a, b = da.asarray(a), da.asarray(b)
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 2:
            msg = f"`{name}` must be a 2-D dask array here; got shape {x.shape}"
            raise ValueError(msg)
        if np.dtype(x.dtype).kind not in "biuf":
            msg = f"`{name}` must be real (CR sampling is defined for real matrices); got {x.dtype}"
            raise TypeError(msg)
    inner = (a.shape[1], b.shape[0])
    if any(math.isnan(s) for s in inner):
        msg = ("the inner dimension of `a` and `b` has unknown chunk sizes; call "
               "compute_chunk_sizes() on them first")
        raise ValueError(msg)
    if inner[0] != inner[1]:
        msg = (f"inner dimensions differ: `a` has shape {a.shape} (l = {inner[0]}) but `b` has "
               f"shape {b.shape} (l = {inner[1]})")
        raise ValueError(msg)
    out = np.result_type(*(np.float64 if np.dtype(x.dtype).kind in "biu" else
                           (np.float32 if x.dtype == np.float16 else x.dtype) for x in (a, b)))
    work = np.dtype(out)
    return a.astype(work), b.astype(work), np.result_type(
        *(np.float64 if np.dtype(x.dtype).kind in "biu" else x.dtype for x in (a, b)))


def _col_parts(x: Any) -> Any:
    """Per column of a block: ``(max|x|, exponent e, ‖x / 2^e‖²)`` as a (3, c) array."""  # numpydoc ignore=PR01,RT01
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] == 0:
        return np.zeros((3, x.shape[1]))
    big = np.max(np.abs(x), axis=0)
    ok = np.isfinite(big) & (big > 0)
    e = np.where(ok, np.frexp(np.where(ok, big, 1.0))[1], 0).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        ssq = np.sum(np.ldexp(x, -e.astype(int)[None, :]) ** 2, axis=0)
    return np.stack([big, e, ssq])


def _combine(parts: list[Any]) -> tuple[Any, Any, int]:
    """Column norms, all-finite flag and the largest entry's exponent from row-chunk parts."""  # numpydoc ignore=PR01,RT01
    p = np.stack(parts)  # (chunks, 3, c)
    big, e, ssq = p[:, 0], p[:, 1], p[:, 2]
    finite = bool(np.all(np.isfinite(big)))
    top = np.max(np.where(big > 0, e, -np.inf), axis=0, initial=-np.inf)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.sum(np.where(big > 0, ssq * 4.0 ** (e - top[None, :]), 0.0), axis=0)
    # norms relative to 2^E, with E the exponent of the largest column: no over/underflow
    peak = int(np.max(top)) if top.size else 0
    return np.sqrt(total) * 2.0 ** (top - peak), finite, peak


def _norm_tasks(x: Any) -> list[list[Any]]:
    """Per column block, the Delayed parts of every row block of ``x``."""  # numpydoc ignore=PR01,RT01
    blocks = x.to_delayed()
    return [[task(_col_parts)(blk) for blk in blocks[:, j]] for j in range(blocks.shape[1])]


def scaled_norms(a: Any, b: Any, norms: Any, check_finite: bool) -> tuple[Any, Any, int, int]:
    """``(na, nb, ea, eb)``: norms of ``a 2^-ea``, ``b 2^-eb`` (one execution if computed)."""  # numpydoc ignore=PR01,RT01
    import dask

    given = _given(norms, a.shape[1])
    want = [x for x, g in ((a, given[0]), (b.T, given[1])) if g is None]
    computed = iter(dask.compute([_norm_tasks(x) for x in want])[0]) if want else iter(())
    out = []
    for name, g in (("a", given[0]), ("b", given[1])):
        if g is None:
            groups = next(computed)
            parts = [_combine(grp) for grp in groups]
            finite = all(p[1] for p in parts)
            peak = max((p[2] for p in parts), default=0)
            vals = np.concatenate([p[0] * 2.0 ** (p[2] - peak) for p in parts]) if parts else np.zeros(0)
        else:
            finite, vals = bool(np.all(np.isfinite(g))), g
            top = float(np.max(vals)) if vals.size else 0.0
            peak = math.frexp(top)[1] if top > 0 and math.isfinite(top) else 0
            vals = np.ldexp(vals, -peak)
        if check_finite and not finite:
            msg = (f"`{name}` contains NaN or Inf (seen in its norms); pass "
                   "check_finite=False to skip this check")
            raise ValueError(msg)
        out.append((vals, peak))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def _given(norms: Any, inner: int) -> tuple[Any, Any]:
    """User norms as float64 NumPy vectors of length ``inner`` (None: compute)."""  # numpydoc ignore=PR01,RT01
    if norms is None:
        return None, None
    if not isinstance(norms, tuple) or len(norms) != 2:
        msg = f"`norms` must be a CRNorms / (columns, rows) pair or None; got {type(norms).__name__}"
        raise TypeError(msg)
    out = []
    for name, x in zip(("norms.columns", "norms.rows"), norms, strict=True):
        if x is not None:
            x = np.asarray(x.compute() if hasattr(x, "compute") else x, dtype=np.float64)
            if x.shape != (inner,):
                msg = f"`{name}` must have shape ({inner},); got {x.shape}"
                raise ValueError(msg)
            if x.size and np.any(x < 0):
                msg = f"`{name}` must be >= 0 (they are norms); got min {x.min()}"
                raise ValueError(msg)
        out.append(x)
    return out[0], out[1]


def cr_norms(a: Any, b: Any, xp: Any) -> Any:
    """Exact norms of the columns of ``a`` and the rows of ``b`` (one execution)."""  # numpydoc ignore=PR01,RT01
    from .._cr import CRNorms

    a, b, out = inputs(a, b, xp)
    na, nb, ea, eb = scaled_norms(a, b, None, False)
    with np.errstate(over="ignore"):
        return CRNorms(np.ldexp(na, ea).astype(out), np.ldexp(nb, eb).astype(out))


def _plan(a: Any, rank: Any, method: Any, probabilities: Any, replace: Any, rescale: Any) -> Any:
    from .. import _cr_checks

    if hasattr(probabilities, "compute"):
        probabilities = probabilities.compute()
    if not isinstance(probabilities, str):
        probabilities = np.asarray(probabilities)
    stand_in = np.empty((0, int(a.shape[1])))
    plan = _cr_checks.plan(rank, method, probabilities, replace, rescale, stand_in, npx)
    if plan.method == "auto":
        msg = ("`method='auto'` needs Gaussian probes of a @ b, which the dask path does not "
               "make; choose method='sample' or 'topk' for dask arrays")
        raise ValueError(msg)
    return plan


def _select(a: Any, b: Any, plan: Any, norms: Any, check_finite: bool, rng: Any,
            merge: bool) -> tuple[Any, Any]:
    """Indices and weights, drawn as the NumPy path draws them."""  # numpydoc ignore=PR01,RT01
    check_finite = check_bool(check_finite, "check_finite")
    check_rng(rng)
    na, nb, ea, eb = scaled_norms(a, b, norms, check_finite)
    w = na * nb
    p = None if plan.method == "topk" else _agn.probabilities(plan.probabilities, w, npx)
    if not isinstance(plan.probabilities, str) and np.any((p == 0) & (w > 0)):
        first = int(np.argmax((p == 0) & (w > 0)))
        msg = (f"`probabilities` is 0 at index {first} where ‖a_i‖·‖b_i‖ > 0; the estimate "
               "would be biased. Give every nonzero outer product p_i > 0")
        raise ValueError(msg)
    if a.shape[1] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    rand = Random(rng, npx, "cpu")
    idx, lam = _agn._select(None, None, w, p, plan._replace(rescale="none"), rand, npx, merge)
    if plan.rescale == "diagonal":
        lam = _diagonal(a, b, idx, ea, eb)
    return np.asarray(idx, dtype=np.int64), np.asarray(lam, dtype=np.float64)


def _diagonal(a: Any, b: Any, idx: Any, ea: int, eb: int) -> Any:
    """Least-squares optimal weights for the selection (one execution, small results)."""  # numpydoc ignore=PR01,RT01
    import dask

    # λ* is invariant under a -> a 2^-s: scaled near 1, the Gram entries cannot overflow
    a_s, b_s = a * 2.0**-ea, b * 2.0**-eb
    C, R = a_s[:, idx], b_s[idx, :]
    gram, rhs = dask.compute((C.T @ C) * (R @ R.T), ((C.T @ a_s) * (R @ b_s.T)).sum(axis=1))
    gram, rhs = np.asarray(gram, np.float64), np.asarray(rhs, np.float64)
    if _agn._well_posed(gram, npx):
        return np.linalg.solve(gram, rhs)
    evals, evecs = np.linalg.eigh(gram)  # duplicates: the minimum-norm λ (pseudo-inverse)
    keep = evals > float(np.max(evals)) * gram.shape[0] * float(np.finfo(np.float64).eps)
    return evecs @ (np.where(keep, 1.0 / np.where(keep, evals, 1.0), 0.0) * (evecs.T @ rhs))


def _gather(a: Any, b: Any, idx: Any, lam: Any, dtype: Any) -> tuple[Any, Any]:
    mag = np.sqrt(np.abs(lam))
    col = np.where(lam < 0, -mag, mag).astype(dtype)
    return a[:, idx] * col[None, :], b[idx, :] * mag.astype(dtype)[:, None]


def cr_factors(a: Any, b: Any, rank: int, *, method: str, probabilities: Any, replace: bool,
               rescale: str, norms: Any, check_finite: bool, rng: Any, xp: Any) -> Any:
    """Dask twin of :func:`lowrank.cr_factors`: lazy ``C``, ``R``; NumPy indices, weights."""  # numpydoc ignore=PR01,RT01
    from .._cr import CRFactors

    a, b, out = inputs(a, b, xp)
    plan = _plan(a, rank, method, probabilities, replace, rescale)
    idx, lam = _select(a, b, plan, norms, check_finite, rng, merge=False)
    C, R = _gather(a, b, idx, lam, a.dtype)
    return CRFactors(C.astype(out), R.astype(out), idx, lam.astype(out))


def cr_matmul(a: Any, b: Any, rank: int, *, method: str, probabilities: Any, replace: bool,
              rescale: str, norms: Any, check_finite: bool, rng: Any, xp: Any) -> Any:
    """Dask twin of :func:`lowrank.cr_matmul`: the lazy product of the merged factors."""  # numpydoc ignore=PR01,RT01
    a, b, out = inputs(a, b, xp)
    plan = _plan(a, rank, method, probabilities, replace, rescale)
    if plan.rescale == "diagonal" and _agn.diagonal_costs_more(
            int(np.nan_to_num(a.shape[0], nan=1)), int(a.shape[1]),
            int(np.nan_to_num(b.shape[1], nan=1)), plan.rank):
        return (a @ b).astype(out)  # cheaper than rescaling, and exact
    idx, lam = _select(a, b, plan, norms, check_finite, rng, merge=True)
    C, R = _gather(a, b, idx, lam, a.dtype)
    return (C @ R).astype(out)


def cr_expected_error(a: Any, b: Any, rank: int, *, method: str, probabilities: Any,
                      replace: bool, rescale: str, norms: Any, samples: int,
                      return_std: bool, rng: Any, xp: Any) -> Any:
    """Exact expected error of i.i.d. sampling and of top-k (two executions)."""  # numpydoc ignore=PR01,RT01
    import dask

    a, b, _ = inputs(a, b, xp)
    plan = _plan(a, rank, method, probabilities, replace, rescale)
    check_int(samples, "samples", low=1)
    return_std = check_bool(return_std, "return_std")
    check_rng(rng)
    iid = plan.method == "sample" and plan.replace and plan.rescale == "none"
    if not iid and not (plan.method == "topk" and plan.rescale == "none"):
        msg = ("for dask arrays cr_expected_error has the exact formulas only: i.i.d. "
               "sampling (replace=True, rescale='none') and method='topk' with "
               "rescale='none'; compute `a` and `b` for the Monte Carlo estimates")
        raise ValueError(msg)
    na, nb, ea, eb = scaled_norms(a, b, norms, True)
    a_s, b_s = a * 2.0**-ea, b * 2.0**-eb  # entries <= 1: the squares below cannot overflow
    w = na * nb
    if iid:
        p = _agn.probabilities(plan.probabilities, w, npx)
        pos = p > 0
        terms = float(np.sum(np.where(pos, w * w / np.where(pos, p, 1.0), 0.0)))
        (fro2,) = dask.compute(_fro2(a_s, b_s))
        err = max((terms - float(fro2)) / plan.rank, 0.0)
    else:
        idx, _ = _agn._select(None, None, w, None, plan, None, npx, False)
        rest = np.setdiff1d(np.arange(int(a.shape[1])), np.asarray(idx))
        (err,) = dask.compute(_fro2(a_s[:, rest], b_s[rest, :])) if rest.size else (0.0,)
    with np.errstate(over="ignore"):
        err = np.ldexp(np.float64(err), 2 * (ea + eb))
    return (np.asarray(err), np.asarray(0.0)) if return_std else np.asarray(err)


def _fro2(a: Any, b: Any) -> Any:
    """Lazy ``‖a b‖_F²`` in float64, by ``1ᵀ[(aᵀa) ∘ (b bᵀ)]1`` when that is cheaper."""  # numpydoc ignore=PR01,RT01
    a, b = a.astype(np.float64), b.astype(np.float64)
    n, inner, m = (np.nan_to_num(s, nan=np.inf) for s in (a.shape[0], a.shape[1], b.shape[1]))
    if inner * (n + m) < n * m:
        return ((a.T @ a) * (b @ b.T)).sum()
    prod = a @ b
    return (prod * prod).sum()
