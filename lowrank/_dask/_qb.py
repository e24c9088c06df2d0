"""Fixed-accuracy blocked randQB on a dask array, and the probe error estimate.

The in-memory algorithm (Yu, Gu & Li 2018, without downdating ``a``), pass for pass,
except that ``‖a‖_F`` is read in the same pass as the first sketch. ``B = Qᴴ a`` is
small (``L × n``) and lives on the client; the residual is applied as ``a X − Q (B X)``.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.numpy as npx
import numpy as np

from .._agnostic._orthogonal import orthonormalize
from .._agnostic._qb import EXACT_BELOW, EXACT_FRACTION, GUARD, _truncation_rank
from . import _kernels as k
from ._graph import at, next_block, orthonormal, task, tree_sum
from ._svd import Basis, _phases, _proj_all, _seed, small_svd
from ._tall import Tall, frobenius

__all__ = ["exact", "probe_error_sq", "randqb"]


def _residual_chunk(a: Any, x: Any, c: float, dtype: Any, q: Any, bx: Any) -> Any:
    """``c a_i x − q_i (B x)`` (no basis yet: ``c a_i x``)."""  # numpydoc ignore=PR01,RT01
    y = k.forward(a, x, c, dtype)
    return y if q is None else y - k.q_times(q, bx)


def _residual(t: Tall, qs: list[Any] | None, b: Any, x: Any) -> list[Any]:
    """Tasks of ``(c a − Q B) x`` per row chunk."""  # numpydoc ignore=PR01,RT01
    bx = None if b is None else b @ x
    qs = [None] * len(t.blocks) if qs is None else qs
    return [at(i, _residual_chunk)(a, x, t.c, t.dtype, q, bx)
            for i, (a, q) in enumerate(zip(t.blocks, qs, strict=True))]


def probe_error_sq(t: Tall, us: list[Any], s: Any, vh: Any, n_probes: int, rand: Any) -> float:
    """Unbiased ``‖a − U S Vh‖_F²`` (of ``a`` itself) from Gaussian probes: one pass."""  # numpydoc ignore=PR01,RT01
    omega = rand.standard_normal((t.n, n_probes), t.dtype)
    svo = (s.astype(t.dtype)[:, None] * vh) @ omega
    parts = [at(i, _probe_chunk)(a, omega, t.dtype, u, svo)
             for i, (a, u) in enumerate(zip(t.blocks, us, strict=True))]
    (total,), _ = t.run([tree_sum(parts)])
    return float(total) / n_probes


def _probe_chunk(a: Any, omega: Any, dtype: Any, u: Any, svo: Any) -> float:
    return k.sqsum(k.forward(a, omega, 1.0, dtype) - u @ svo)


def _qr_chunk(a: Any, dtype: Any) -> tuple[Any, Any, tuple[float, float]]:
    """Householder ``(Q_i, R_i)`` of a chunk and its share of ``‖a‖_F``."""  # numpydoc ignore=PR01,RT01
    w = a if a.dtype == dtype else a.astype(dtype)
    big = k.chunk_max(w)
    if not np.isfinite(big):  # reported by the client; QR of non-finite data is moot
        return np.zeros((w.shape[0], 0), dtype), np.zeros((0, w.shape[1]), dtype), (big, 0.0)
    q, r = np.linalg.qr(w)
    return q, r, (big, k._scaled_sqsum(w, big))


def exact(t: Tall, rtol: float | None, check_finite: bool, *,
          rank: int | None = None) -> tuple[list[Any], Any, Any, float]:
    """Optimal truncation from the thin SVD by TSQR: one pass (``‖a‖_F`` included).

    Per chunk ``a_i = Q_i R_i``; the stacked ``R_i`` are factorised as ``Q̂ R`` and
    ``R = U_r S Vh``, so ``U_i = Q_i Q̂_i U_r``. For ``a`` with few columns (the
    in-memory path's rule) this is cheaper than growing a randomized basis. Truncated
    to the smallest rank meeting ``rtol``, or to ``rank``.
    """  # numpydoc ignore=PR01,RT01
    from ._graph import _stacked

    parts = [at(i, _qr_chunk, nout=3)(b, t.dtype) for i, b in enumerate(t.blocks)]
    stacked = task(_stacked)([p[1] for p in parts])
    norms = task(list)([p[2] for p in parts])
    (stacked, norms), (qs,) = t.run([stacked, norms], [[p[0] for p in parts]])
    norm = frobenius(norms)
    t.check_first((norm, math.isfinite(norm)), check_finite)
    if norm == 0.0:
        return _zero(t) if rank is None else _zero(t, rank)
    ur, s, vh = np.linalg.svd(stacked[1], full_matrices=False)
    if rank is None:
        rank, err_sq = _truncation_rank(s / norm, 0.0, rtol**2)
    else:
        err_sq = float(np.sum((s[rank:] / norm) ** 2))
    ur, s, vh = ur[:, :rank], s[:rank], vh[:rank]
    phase = _phases(vh)
    vh, ur = vh * phase.conj()[:, None], ur * phase[None, :]
    us = [at(i, _times)(q, qh @ ur) for i, (q, qh) in enumerate(zip(qs, stacked[0], strict=True))]
    t.c = 1.0
    return us, s, vh, math.sqrt(err_sq)


def _times(q: Any, m: Any) -> Any:
    return q @ m


def _zero(t: Tall, rank: int = 0) -> tuple[list[Any], Any, Any, float]:
    return [np.zeros((r, rank), dtype=t.dtype) for r in t.rows], np.zeros(rank), np.zeros(
        (rank, t.n), dtype=t.dtype), 0.0


def randqb(t: Tall, rtol: float, block: int | None, n_power_iter: int, rand: Any,
           check_finite: bool) -> tuple[list[Any], Any, Any, float]:
    """``(U chunk tasks, S, Vh, relative error)`` meeting ``rtol`` (estimated).

    Hands over to :func:`exact` (one more pass) as soon as the basis would need more
    than ``min(m, n) / 4`` columns, and from the start when ``min(m, n) <= 64``.
    """  # numpydoc ignore=PR01,RT01
    limit = min(t.m, t.n)
    if limit <= EXACT_BELOW:
        return exact(t, rtol, check_finite)
    max_width = limit // EXACT_FRACTION
    width = block or 32
    omega = rand.standard_normal((t.n, min(width, limit)), t.dtype)
    t.seed = _seed(rand)
    ys, stats, norms = t.sketch(omega, norm=True)
    first = next_block(ys, None, t.dtype, t.wide, (t.seed, 0)) if n_power_iter == 0 else (
        orthonormal(ys, t.dtype, t.wide))
    (stats, norms), (qi,) = t.run([stats, norms], [first])
    t.check_first(stats, check_finite)
    norm_sq = (frobenius(norms) * t.c) ** 2  # of c·a, the operator every later pass uses
    if norm_sq == 0.0:
        return _zero(t)
    tol_sq, guard_sq = rtol**2 * norm_sq, (GUARD * math.sqrt(float(np.finfo(t.dtype).eps)))**2 * norm_sq
    qs, b, err_sq, blocks = None, None, norm_sq, 0
    while True:
        for step in range(n_power_iter):
            qi = _power_step(t, qs, b, qi, last=step == n_power_iter - 1, counter=blocks)
        (w,), _ = t.run([t.adjoint(qi)])
        qs = [[x] for x in qi] if qs is None else [[*o, x] for o, x in zip(qs, qi, strict=True)]
        b = k.h(w) if b is None else np.concatenate([b, k.h(w)], axis=0)
        err_sq = max(norm_sq - k.sqsum(b), 0.0)
        blocks, width = blocks + 1, width if block else 2 * width
        room = limit - b.shape[0]
        if room <= 0 or guard_sq < err_sq <= tol_sq:
            break
        size = min(width, room)
        if b.shape[0] + size > max_width:
            return exact(t, rtol, check_finite)
        ys = _residual(t, qs, b, rand.standard_normal((t.n, size), t.dtype))
        small = ([tree_sum([at(i, k.sqsum)(y) for i, y in enumerate(ys)])]
                 if err_sq <= guard_sq else [])
        nxt = (next_block(ys, qs, t.dtype, t.wide, (t.seed, blocks)) if n_power_iter == 0
               else orthonormal(ys, t.dtype, t.wide))
        values, (qi,) = t.run(small, [nxt])
        if small:  # the cheap update is rounding: this sketch doubles as a probe
            err_sq = float(values[0]) / size
            if err_sq <= tol_sq:
                break
    if b.shape[0] >= limit and err_sq <= guard_sq:  # all of range(a): measure what is left
        probes = _residual(t, qs, b, rand.standard_normal((t.n, 16), t.dtype))
        (total,), _ = t.run([tree_sum([at(i, k.sqsum)(y) for i, y in enumerate(probes)])])
        err_sq = float(total) / 16
    basis, err_sq = _krylov_extension(t, Basis(qs, k.h(b)), err_sq, norm_sq, tol_sq,
                                      guard_sq, blocks)
    _, s, _ = small_svd(t, basis, basis.w.shape[1])
    rank, err_sq = _truncation_rank(s * t.c, err_sq, tol_sq)
    us, s, vh = small_svd(t, basis, rank)
    return us, s, vh, math.sqrt(err_sq / norm_sq)


def _krylov_extension(t: Tall, basis: Basis, err_sq: float, norm_sq: float, tol_sq: float,
                      guard_sq: float, counter: int) -> tuple[Basis, float]:
    """One block Krylov step on the leading Ritz vectors before the truncation: 2 passes.

    randQB stops as soon as ``‖a − QB‖`` meets the tolerance, when the best truncation
    inside ``span(Q)`` can still need 13-33 % more rank than the optimum on flat spectra.
    As in memory, with ``Bᴴ = P S Zᴴ`` and ``t`` the rank the first basis needs plus a
    quarter (at least 10), the basis gets ``orth(a Bᴴ Z_t) = orth(a P_t S_t)`` (one
    forward pass, orthogonalised in-graph) and its ``aᴴ Q_new`` (one adjoint pass).
    """  # numpydoc ignore=PR01,RT01
    p, s, _ = np.linalg.svd(basis.w, full_matrices=False)  # s: of c·a
    k0, _ = _truncation_rank(s, err_sq, tol_sq)
    width = basis.w.shape[1]
    size = min(width, min(t.m, t.n) - width, k0 + max(10, k0 // 4))
    if size <= 0:
        return basis, err_sq
    ys = t.forward(p[:, :size] * s[:size].astype(p.dtype)[None, :])
    (qn,) = t.run([], [next_block(ys, basis.qs, t.dtype, t.wide, (t.seed, counter, 2))])[1]
    (wn,), _ = t.run([t.adjoint(qn)])
    w = np.concatenate([basis.w, wn], axis=1)
    new = max(norm_sq - float(np.sum(np.linalg.svd(w, compute_uv=False).astype(np.float64)
                                      ** 2)), 0.0)
    # below the rounding guard keep the earlier (probe) estimate: the space only grew
    err_sq = new if new > guard_sq else err_sq
    return Basis([[*old, q] for old, q in zip(basis.qs, qn, strict=True)], w), err_sq


def _power_step(t: Tall, qs: list[Any] | None, b: Any, qi: list[Any], *, last: bool,
                counter: int) -> list[Any]:
    """One power iteration on the residual ``c a − Q B`` (two passes)."""  # numpydoc ignore=PR01,RT01
    small = [t.adjoint(qi)]
    if qs is not None:
        small.append(_proj_all(qs, qi))
    values, _ = t.run(small)
    z = values[0] if qs is None else values[0] - k.h(b) @ values[1]
    ys = _residual(t, qs, b, orthonormalize(z, npx))
    nxt = (next_block(ys, qs, t.dtype, t.wide, (t.seed, counter, 1)) if last
           else orthonormal(ys, t.dtype, t.wide))
    (qi,) = t.run([], [nxt])[1]
    return qi
