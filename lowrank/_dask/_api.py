"""Dask entry points of the SVD family, called by the public functions on dask input.

Options are validated by the same checks as the in-memory path. The factor along the
long side of ``a`` (``U`` for tall, ``Vh`` for wide input) is a dask array chunked like
``a`` along that side, built on the kept basis chunks: computing it reads ``a`` no more.
The other factor and ``S`` are NumPy arrays.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.numpy as npx
import numpy as np

from .._lib._random import Random
from .._lib._validation import check_bool, check_int, check_option, check_positive
from . import _svd
from ._graph import pinned
from ._tall import Tall, frobenius

__all__ = ["randomized_range_finder", "randomized_svd", "svd_approx"]

# Below GUARD·sqrt(eps)·‖a‖_F the update ‖a‖² − ‖B‖² is rounding: 16 probes measure it.
GUARD = 10.0
PROBES = 16


def _rand(rng: Any) -> Any:
    return Random(rng, npx, "cpu")


def _common(rank: int, t: Tall, n_oversamples: int, n_power_iter: int | None, rng: Any,
            compute: bool, name: str = "rank") -> tuple[int, bool]:
    from .._randomized import _check_common

    rank = check_int(rank, name, low=0, high=min(t.m, t.n), high_name="min(m, n)")
    _check_common(n_oversamples, n_power_iter, rng)
    return rank, check_bool(compute, "compute")


def _finish(t: Tall, us: list[Any], s: Any, vh: Any, compute: bool) -> tuple[Any, Any, Any]:
    """``(U, S, Vh)`` of ``a`` from those of its tall side, in the caller's dtypes."""  # numpydoc ignore=PR01,RT01
    out = t.out_dtype
    rank = vh.shape[0]
    long = t.wrap(us, rank, t.dtype)
    if compute:
        (long,), _ = t.run([long], reads=False)
    long = long if long.dtype == out else long.astype(out)
    short = vh if vh.dtype == out else vh.astype(out)
    s = s.astype(np.finfo(out).dtype)  # the real dtype of the caller's
    if t.transposed:  # we factorised aᴴ = U S Vh, so a = Vhᴴ S Uᴴ
        return short.conj().T, s, long.conj().T
    return long, s, short


def _empty(t: Tall, rank: int, check_finite: bool, compute: bool) -> tuple[Any, Any, Any]:
    """Zero factors (rank 0 or an empty matrix), after a NaN/Inf check pass if asked."""  # numpydoc ignore=PR01,RT01
    import dask.array as da

    if check_finite and t.m * t.n:
        (ok,), _ = t.run([da.isfinite(t.array).all()])
        t.check_first((0.0, bool(ok)), True)
    us = [np.zeros((r, rank), dtype=t.dtype) for r in t.rows]
    s = np.zeros(rank, dtype=t.real_dtype())
    return _finish(t, us, s, np.zeros((rank, t.n), dtype=t.dtype), compute)


def randomized_svd(a: Any, rank: int, *, n_oversamples: int, n_power_iter: int | None,
                   method: str, block_size: int | None, tol: float | None, rng: Any,
                   check_finite: bool, compute: bool) -> Any:
    """Dask twin of :func:`lowrank.randomized_svd` (same options)."""  # numpydoc ignore=PR01,RT01
    from .._randomized import RandomizedSVDResult, _check_tol

    check_finite = check_bool(check_finite, "check_finite")
    t = Tall(a)
    with pinned(t.pins):  # the tasks of chunk i run where chunk i lives
        rank, compute = _common(rank, t, n_oversamples, n_power_iter, rng, compute)
        method = check_option(method, "method", ("auto", "block_krylov", "subspace"))
        if block_size is not None:
            check_int(block_size, "block_size", low=1)
        _check_tol(tol, method)
        rand = _rand(rng)
        if rank == 0 or t.m == 0 or t.n == 0:
            U, S, Vh = _empty(t, rank, check_finite, compute)
            return RandomizedSVDResult(U, S, Vh, error_estimate=0.0 if tol else None,
                                       passes=t.passes)
        if tol is None and _spans_all(t, rank, n_oversamples, n_power_iter, method, block_size):
            from . import _qb

            us, s, vh, _ = _qb.exact(t, None, check_finite, rank=rank)
            U, S, Vh = _finish(t, us, s, vh, compute)
            return RandomizedSVDResult(U, S, Vh, error_estimate=None, passes=t.passes)
        basis, _ = _basis(t, rank, n_oversamples, n_power_iter, method, block_size, rand,
                          check_finite, tol=tol)
        U, S, Vh = _finish(t, *_svd.small_svd(t, basis, rank), compute)
        return RandomizedSVDResult(U, S, Vh, error_estimate=basis.residual, passes=t.passes)


def _spans_all(t: Tall, rank: int, n_oversamples: int, n_power_iter: int | None,
               method: str, block_size: int | None) -> bool:
    """Whether the basis would span all of range(aᴴ): then one exact TSQR pass is both
    cheaper and accurate (a basis that wide resolves its last blocks only to round-off
    relative to their projections)."""  # numpydoc ignore=PR01,RT01
    method, width, n_iter = _svd.plan(t, rank, n_oversamples, n_power_iter, method, block_size)
    return width * (2 * n_iter + 1 if method == "block_krylov" else 1) >= t.n


def _basis(t: Tall, rank: int, n_oversamples: int, n_power_iter: int | None, method: str,
           block_size: int | None, rand: Any, check_finite: bool, *, tol: float | None = None,
           norm: bool = False) -> tuple[Any, Any]:
    method, width, n_iter = _svd.plan(t, rank, n_oversamples, n_power_iter, method, block_size)
    if method == "block_krylov" and tol is None:
        from ._gram import gram_krylov

        return gram_krylov(t, width, n_iter, min(rank + n_oversamples, t.n), rand,
                           check_finite=check_finite, norm=norm)
    if method == "block_krylov":
        return _svd.krylov(t, width, n_iter, rand, rank=rank, tol=tol,
                           check_finite=check_finite, norm=norm)
    return _svd.subspace(t, width, n_iter, rand, check_finite=check_finite, norm=norm)


def randomized_range_finder(a: Any, size: int, *, n_power_iter: int | None, rng: Any,
                            compute: bool) -> Any:
    """Dask twin of :func:`lowrank.randomized_range_finder`: ``Q`` chunked like ``a``'s rows."""  # numpydoc ignore=PR01,RT01
    import dask.array as da

    t = Tall(a, transpose=False)  # the range of a itself
    with pinned(t.pins):  # the tasks of chunk i run where chunk i lives
        size, compute = _common(size, t, 0, n_power_iter, rng, compute, name="size")
        if size == 0 or t.m == 0 or t.n == 0:
            if t.m * t.n:
                (ok,), _ = t.run([da.isfinite(t.array).all()])
                t.check_first((0.0, bool(ok)), True)
            q = da.zeros((t.m, size), dtype=t.out_dtype, chunks=(t.rows, size))
            return q.compute() if compute else q
        q = _svd.range_finder(t, size, 2 if n_power_iter is None else n_power_iter, _rand(rng))
        Q = t.wrap(q, size, t.dtype)
        if compute:
            (Q,), _ = t.run([Q], reads=False)
        return Q if Q.dtype == t.out_dtype else Q.astype(t.out_dtype)


def svd_approx(a: Any, *, rank: int | None, rtol: float | None, n_oversamples: int,
               n_power_iter: int | None, block_size: int | None, rng: Any,
               check_finite: bool, compute: bool) -> Any:
    """Dask twin of :func:`lowrank.svd_approx` (``‖a‖_F`` fused into the first pass)."""  # numpydoc ignore=PR01,RT01
    from .._svd import LowRankApprox
    from . import _qb

    check_finite = check_bool(check_finite, "check_finite")
    t = Tall(a)
    with pinned(t.pins):  # the tasks of chunk i run where chunk i lives
        if (rank is None) == (rtol is None):
            msg = f"give exactly one of `rank` and `rtol`; got rank={rank!r}, rtol={rtol!r}"
            raise ValueError(msg)
        if rtol is not None:
            rtol = check_positive(rtol, "rtol")
            if not rtol < 1:
                msg = f"`rtol` must satisfy 0 < rtol < 1; got {rtol}"
                raise ValueError(msg)
        if block_size is not None:
            check_int(block_size, "block_size", low=1)
        rank, compute = _common(0 if rank is None else rank, t, n_oversamples, n_power_iter, rng,
                                compute) if rtol is None else (None, check_bool(compute, "compute"))
        if rank is None:
            from .._randomized import _check_common

            _check_common(n_oversamples, n_power_iter, rng)
        rand = _rand(rng)
        if rank == 0 or min(t.m, t.n) == 0:
            U, S, Vh = _empty(t, 0, check_finite, compute)
            return LowRankApprox(U, S, Vh, 0, 0.0 if min(t.m, t.n) == 0 else 1.0, t.passes)
        if rtol is not None:
            us, s, vh, rel = _qb.randqb(t, rtol, block_size, 1 if n_power_iter is None
                                        else n_power_iter, rand, check_finite)
        else:
            basis, norms = _basis(t, rank, n_oversamples, n_power_iter, "auto", None, rand,
                                  check_finite, norm=True)
            us, s, vh = _svd.small_svd(t, basis, rank)
            rel = _fixed_rank_error(t, frobenius(norms), us, s, vh, rand)
        U, S, Vh = _finish(t, us, s, vh, compute)
        return LowRankApprox(U, S, Vh, int(S.shape[0]), rel, t.passes)


def _fixed_rank_error(t: Tall, norm: float, us: list[Any], s: Any, vh: Any, rand: Any) -> float:
    """``sqrt(1 − Σ (S/‖a‖)²)``, or a 16-probe estimate (one pass) below the guard."""  # numpydoc ignore=PR01,RT01
    if norm == 0.0:
        return 0.0
    rel_sq = max(1.0 - float(np.sum((s.astype(np.float64) / norm) ** 2)), 0.0)
    if rel_sq > (GUARD * math.sqrt(float(np.finfo(t.dtype).eps))) ** 2:
        return math.sqrt(rel_sq)
    from . import _qb

    return math.sqrt(_qb.probe_error_sq(t, us, s, vh, PROBES, rand)) / norm
