"""Randomized range finder and SVD of a dask array: one graph execution per pass.

Passes are the in-memory path's: ``2 q + 1`` for the range finder and ``2 q + 2`` for the
SVD (block Krylov: one more with ``tol``). A forward pass computes ``Y_i = a_i X`` per row
chunk and orthonormalises ``Y`` in the same graph (:mod:`._graph`); an adjoint pass
reduces ``aᴴ Q`` (n × width) to the client, where the small work is done in NumPy.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.numpy as npx
import numpy as np

from .._agnostic._orthogonal import orthonormalize
from .._agnostic._randomized import auto_plan
from . import _kernels as k
from ._graph import at, next_block, orthonormal, task, tree_sum
from ._tall import Tall

__all__ = ["Basis", "krylov", "range_finder", "small_svd", "subspace"]


class Basis:
    """Kept orthonormal blocks per row chunk, ``W = c·aᴴ Q`` and the residual estimate."""  # numpydoc ignore=PR01

    def __init__(self, qs: list[list[Any]], w: Any, residual: float | None = None) -> None:
        self.qs, self.w, self.residual = qs, w, residual
        self.left = None  # Q = (kept chunks) @ left when set (a small matrix)


def _seed(rand: Any) -> int:
    """Seed of the per-chunk Gaussian replacement columns, drawn from ``rand``."""  # numpydoc ignore=PR01,RT01
    return int(rand.uniform((1,), np.float64)[0] * 2.0**62)


def _first(t: Tall, width: int, rand: Any, check_finite: bool, *, norm: bool = False,
           basis: str = "block") -> tuple[list[Any], Any]:
    """Pass 1: ``Y = a Ω``, orthonormalised in-graph; ``(Q chunks, norms or None)``."""  # numpydoc ignore=PR01,RT01
    omega = rand.standard_normal((t.n, width), t.dtype)
    seed = _seed(rand)
    ys, stats, norms = t.sketch(omega, norm=norm)
    q = (next_block(ys, None, t.dtype, t.wide, (seed, 0)) if basis == "block"
         else orthonormal(ys, t.dtype, t.wide))
    small = [stats] if norms is None else [stats, norms]
    values, (kept,) = t.run(small, [q])
    t.check_first(values[0], check_finite)
    t.seed = seed
    return kept, (values[1] if norm else None)


def range_finder(t: Tall, size: int, n_power_iter: int, rand: Any, *,
                 check_finite: bool = True) -> list[Any]:
    """HMT Alg. 4.4 on the row chunks: kept chunks of ``Q``; ``2 q + 1`` passes."""  # numpydoc ignore=PR01,RT01
    q, _ = _first(t, size, rand, check_finite, basis="orth")
    for _ in range(n_power_iter):
        (w,), _ = t.run([t.adjoint(q)])
        z = orthonormalize(w, npx)
        (q,) = t.run([], [orthonormal(t.forward(z), t.dtype, t.wide)])[1]
    return q


def subspace(t: Tall, size: int, n_power_iter: int, rand: Any, *,
             check_finite: bool = True, norm: bool = False) -> tuple[Basis, Any]:
    """Range finder plus ``W = c·aᴴ Q``: ``2 q + 2`` passes."""  # numpydoc ignore=PR01,RT01
    q, norms = _first(t, size, rand, check_finite, norm=norm, basis="orth")
    for _ in range(n_power_iter):
        (w,), _ = t.run([t.adjoint(q)])
        (q,) = t.run([], [orthonormal(t.forward(orthonormalize(w, npx)), t.dtype, t.wide)])[1]
    (w,), _ = t.run([t.adjoint(q)])
    return Basis([[b] for b in q], w), norms


def krylov(t: Tall, block: int, n_iter: int, rand: Any, *, rank: int = 0,
           tol: float | None = None, check_finite: bool = True,
           norm: bool = False) -> tuple[Basis, Any]:
    """Block Krylov basis and ``W = c·aᴴ Q`` (``2 q + 2`` passes; see the in-memory twin)."""  # numpydoc ignore=PR01,RT01
    limit = min(t.m, t.n)
    q, norms = _first(t, block, rand, check_finite, norm=norm)
    qs, ws, aw, residual = [[b] for b in q], [], [], None
    for it in range(n_iter + 1):
        (w,), _ = t.run([t.adjoint([chunk[-1] for chunk in qs])])
        ws.append(w)
        width = sum(x.shape[1] for x in ws)
        room = limit - width
        last = room <= 0 or it == n_iter
        if tol is None and last:
            break
        ys = t.forward(w)
        small, keep = [], []
        if tol is not None:
            keep.append(ys)
            if width >= rank:
                small.append(_residual_task(np.concatenate(ws, axis=1), qs, aw, ys, rank))
        if not last:
            cut = ([at(i, _first_cols)(y, room) for i, y in enumerate(ys)]
                   if room < w.shape[1] else ys)
            keep.append(next_block(cut, qs, t.dtype, t.wide, (t.seed, it + 1)))
        values, kept = t.run(small, keep)
        if tol is not None:
            aw = [[*old, new] for old, new in zip(aw or [[] for _ in ys], kept[0], strict=True)]
            if small:
                residual = values[0]
                if residual <= tol:
                    break
        if last:
            break
        qs = [[*old, new] for old, new in zip(qs, kept[-1], strict=True)]
    return Basis(qs, np.concatenate(ws, axis=1) if len(ws) > 1 else ws[0], residual), norms


def _proj_all(qs: list[Any], ys: list[Any]) -> Any:
    """Task of ``Qᴴ Y`` reduced over the chunks."""  # numpydoc ignore=PR01,RT01
    from ._graph import _proj

    return tree_sum([at(i, _proj)(q, y) for i, (q, y) in enumerate(zip(qs, ys, strict=True))])


def _first_cols(y: Any, n: int) -> Any:
    return y[:, :n]


def _residual_task(w: Any, qs: list[list[Any]], aw: list[list[Any]], ys: list[Any],
                   rank: int) -> Any:
    """Task of the largest relative Ritz residual of the top-``rank`` triplets of span(Q).

    With ``Wᴴ W = V Λ Vᴴ`` (client side, small): ``r_j = (AW v_j − λ_j Q v_j) / σ_j``;
    the column sums of ``|AW V − Q V Λ|²`` are reduced over the chunks in-graph.
    """  # numpydoc ignore=PR01,RT01
    lam, v = np.linalg.eigh(k.h(w) @ w)
    vk, lk = v[:, ::-1][:, :rank], np.maximum(lam[::-1][:rank], 0.0)
    parts = [at(i, _resid_chunk)([*old, y], q, vk, lk)
             for i, (old, y, q) in enumerate(zip(aw or [[] for _ in ys], ys, qs, strict=True))]
    return task(_rel_residual)(tree_sum(parts), lk)


def _resid_chunk(aw: list[Any], q: list[Any], vk: Any, lk: Any) -> Any:
    r = k.q_times(aw, vk) - k.q_times(q, vk * lk.astype(vk.dtype)[None, :])
    return np.sum(np.abs(r).astype(np.float64) ** 2, axis=0)


def _rel_residual(colsq: Any, lk: Any) -> float:
    s = np.sqrt(lk)
    if s.size == 0 or s[0] == 0:
        return 0.0
    resolved = s > math.sqrt(float(np.finfo(s.dtype).eps)) * s[0]
    rel = np.where(resolved, np.sqrt(colsq) / np.where(resolved, s * s[0], 1.0), 0.0)
    return float(rel.max())


def small_svd(t: Tall, basis: Basis, rank: int) -> tuple[list[Any], Any, Any]:
    """``(U chunk tasks, S, Vh)`` of ``Q B`` from ``W = Bᴴ``; signs fixed on ``Vh``.

    ``S`` is of ``a`` itself (the scale ``c`` divided out). The sign of each triplet makes
    the largest-magnitude entry of its short-side singular vector (the row of ``Vh`` of
    the tall problem) real and positive: the long side is never gathered for it.
    """  # numpydoc ignore=PR01,RT01
    # W = P Σ Zᴴ gives Q B = (Q Z) Σ Pᴴ: one backward-stable SVD of the small n × L matrix
    p, s, zh = np.linalg.svd(basis.w, full_matrices=False)
    ur, s, vh = k.h(zh[:rank]), s[:rank] / t.c, k.h(p[:, :rank])
    phase = _phases(vh)
    vh, ur = vh * phase.conj()[:, None], ur * phase[None, :]
    if basis.left is not None:
        ur = (basis.left @ ur).astype(ur.dtype)
    return [at(i, _combine)(q, ur) for i, q in enumerate(basis.qs)], s, vh


def _combine(q: list[Any], m: Any) -> Any:
    return k.q_times(q, m)


def _phases(vh: Any) -> Any:
    """Unit phases of the largest-magnitude entry of each row (1 for zero rows)."""  # numpydoc ignore=PR01,RT01
    if vh.shape[1] == 0:
        return np.ones(vh.shape[0], dtype=vh.dtype)
    pivot = vh[np.arange(vh.shape[0]), np.argmax(np.abs(vh), axis=1)]
    size = np.abs(pivot)
    return np.where(size == 0, 1, pivot / np.where(size == 0, 1, size)).astype(vh.dtype)


def plan(t: Tall, rank: int, n_oversamples: int, n_power_iter: int | None, method: str,
         block_size: int | None) -> tuple[str, int, int]:
    """The in-memory path's method, width and depth, except that a Krylov space of one
    block (``n_power_iter=0``) is ``rank + n_oversamples`` wide like a subspace sketch."""  # numpydoc ignore=PR01,RT01
    shape = type("Shape", (), {"m": t.m, "n": t.n})
    method, width, n_iter = auto_plan(shape, rank, n_oversamples, n_power_iter, method,
                                      block_size)
    if method == "block_krylov" and n_iter == 0 and block_size is None:
        # no extension: the Krylov space is one sketch, which needs the full oversampling
        width = min(rank + n_oversamples, t.m, t.n)
    return method, width, n_iter
