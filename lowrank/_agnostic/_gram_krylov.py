"""Block Krylov SVD with its basis on the short side of ``a`` (pure array API).

For ``op`` of shape m × n with ``m >= n`` the Krylov space is built in the n-dimensional
row space, ``K = [AᴴAΩ, (AᴴA)²Ω, …, (AᴴA)^(q+1) Ω]``: the basis is n × L instead of
m × L, and for dense ``a`` each product ``AᴴA V`` reads ``a`` once, row chunk by row
chunk (:meth:`Operator.gram_matmat`). The long side only ever holds ``m × rank`` (and
one ``m × block`` sketch): on a 10⁶ × 512 input the m × L basis of the long-side method
alone is 0.3 times the input.

In exact arithmetic this is at least as accurate as the long-side block Krylov method
with the same ``Ω`` and depth: that method's approximation ``Q Qᴴ A`` has its row space
in ``Aᴴ span(Q) = K``, and the Rayleigh–Ritz step on ``K`` below gives the best rank-k
approximation with row space in ``K``.
"""

from __future__ import annotations

import math
from typing import Any

from ._linalg import conj_transpose
from ._orthogonal import next_block

__all__ = ["gram_fixed_accuracy", "gram_krylov_svd"]

# The Gram matrix Vᴴ AᴴA V is trusted when rounding in it (taken as
# GRAM_ROUNDING·eps·sqrt(λ_1·Σλ_j), 20x the largest error measured) cannot lower the
# energy captured by the top ``rank`` Ritz vectors by more than RELATIVE_LOSS of the
# error left, or by more than the square of ABSOLUTE_LOSS·eps·σ_1 per triplet.
GRAM_ROUNDING = 16.0
RELATIVE_LOSS = 1e-4
ABSOLUTE_LOSS = 8.0


def gram_krylov_svd(op: Any, block: int, n_iter: int, rank: int, rand: Any,
                    xp: Any) -> tuple[Any, Any, Any, Any]:
    """``(U, S, Vh, scale)`` of the rank-``rank`` Rayleigh–Ritz approximation on ``K``.

    ``S`` is that of ``scale · op`` (``scale`` a power of two, or None: see
    ``_randomized._sketch``). Passes: 2 for ``AᴴAΩ`` (the first product also checks
    NaN/Inf and picks the scale), one per further block and one for the last block's
    Gram entries (each ``AᴴA V_i``: one read of dense ``a``, two of other operators),
    and one for ``A (V W_k)``: ``n_iter + 4`` reads of dense ``a`` in all (one more
    when the Gram matrix does not resolve the Ritz vectors, below).

    The top-``rank`` Ritz vectors ``W_k`` are taken from the Gram matrix
    ``H = Vᴴ AᴴA V`` (assembled from the kept products), then ``T = A V W_k`` (m × rank)
    is formed and factorised by LAPACK's SVD, so the singular values and ``U`` carry only
    the rounding of that backward-stable SVD. ``H`` itself resolves eigenvalues only to
    about ``eps·σ_1·‖A‖_F``; where that could lose a visible part of the error (a tail
    far below ``sqrt(eps)·σ_1``, an exactly low-rank matrix), the
    Ritz vectors are taken from the SVD of the R factor of ``A V`` instead (TSQR over
    row chunks, one more pass, no m-row temporary).
    """  # numpydoc ignore=PR01,RT01
    from ._randomized import _sketch, _store, _zeros

    op, Y, factor = _sketch(op, block, rand, xp)
    Z = op.rmatmat(Y)
    del Y
    L = min(op.n, block * (n_iter + 1))
    V = _zeros((*op.batch, op.n, L), Z.dtype, Z, xp)
    start, width = 0, _store(V, 0, next_block(Z, None, rand, xp, overwrite=True))
    del Z
    products = []
    while True:
        Zi = op.gram_matmat(V[..., :, start:width])
        products.append(Zi)
        room = L - width
        if room <= 0:
            break
        Vi = next_block(Zi[..., :room] if room < Zi.shape[-1] else Zi, V[..., :, :width],
                        rand, xp)
        start, width = width, _store(V, width, Vi)
    V = V[..., :, :width]
    lam, W = _ritz(V, products, xp)
    del products
    if not _gram_resolves(lam, rank, xp):
        # right singular vectors of A V from its R factor (TSQR over row chunks: backward
        # stable, no m-row temporary), in place of the Gram matrix's eigenvectors
        W = conj_transpose(xp.linalg.svd(_tsqr_r(op, V, xp))[2], xp)
    Vk = V @ W[..., :rank]
    U, S, Yh = xp.linalg.svd(op.matmat(Vk), full_matrices=False)
    Vh = conj_transpose(Vk @ conj_transpose(Yh, xp), xp)
    return U, S, Vh, factor


def _tsqr_r(op: Any, V: Any, xp: Any) -> Any:
    """R factor of ``op V`` (L × L), by Householder QR of each row chunk stacked on R."""  # numpydoc ignore=PR01,RT01
    R = None
    for Y in op.row_chunk_matmat(V):
        R = xp.linalg.qr(Y if R is None else xp.concat([R, Y], axis=-2))[1]
    return R


def _gram_resolves(lam: Any, rank: int, xp: Any) -> bool:
    """Whether the top-``rank`` eigenvectors of the Gram matrix are accurate enough.

    With rounding ``δ`` in ``H`` (in norm), the computed top-k eigenspace captures at most
    ``min(2kδ, kδ²/(g − 2δ))`` less energy than the exact one (``g = λ_k − λ_{k+1}``,
    first- and second-order perturbation bounds). That loss is accepted when it is below
    ``RELATIVE_LOSS`` times the Ritz tail ``Σ_{j>k} λ_j − Lδ`` (a lower bound on the
    squared error left) or below ``k·(ABSOLUTE_LOSS·eps·σ_1)²``.
    """  # numpydoc ignore=PR01,RT01
    L = int(lam.shape[-1])
    if rank >= L:
        return True
    real = lam.dtype
    eps = float(xp.finfo(real).eps)
    pos = xp.where(lam > 0, lam, xp.zeros_like(lam))
    top = xp.max(pos, axis=-1)
    # rounding in the products A_cᴴ(A_c V) grows like eps·‖A‖_2·‖A‖_F (measured 0.05-5
    # eps·λ_1 on flat and decaying spectra); the Ritz values' sum stands in for ‖A‖_F²
    delta = GRAM_ROUNDING * eps * xp.sqrt(top * xp.sum(pos, axis=-1))
    gap = lam[..., rank - 1] - lam[..., rank] - 2 * delta
    crude = 2 * rank * delta
    safe_gap = xp.where(gap > 0, gap, xp.ones_like(gap))
    fine = xp.where(gap > 0, rank * delta * delta / safe_gap, crude)
    loss = xp.minimum(crude, fine)
    tail = xp.sum(pos[..., rank:], axis=-1) - L * delta
    floor = rank * (ABSOLUTE_LOSS * eps) ** 2 * top
    allowed = xp.maximum(RELATIVE_LOSS * tail, floor)
    ok = xp.logical_or(loss <= allowed, top <= 0)
    return bool(xp.all(ok)) and math.isfinite(float(xp.max(top)))


def gram_fixed_accuracy(op: Any, norm_sq: float, tol_sq: float, guard_sq: float, *,
                        block: int | None, max_width: int | None, rand: Any,
                        xp: Any) -> tuple[Any, Any, Any, float] | None:
    """Fixed-accuracy SVD ``(U, S, Vh, err_sq)`` of a dense ``op`` on a short-side basis.

    The basis ``V`` (n × L) grows block by block: each block comes from the previous
    block's product ``Z_i = AᴴA V_i`` projected out of ``V`` (a block Krylov step), and
    from block 2 on it is widened to twice the previous width with Gaussian directions
    (those are refined by the next step), so reads grow like ``log(rank)``. Since
    ``‖A − A V Vᴴ‖_F² = ‖A‖_F² − Σ_i tr(V_iᴴ Z_i)``, every read updates the error.
    Below ``guard_sq`` that difference is rounding, and ``‖A (I − V Vᴴ) Ω‖²/16`` from
    16 Gaussian probes (one pass, unbiased) replaces it. Once the tolerance is met, one
    more block is spanned by ``AᴴA`` applied to the leading Ritz vectors (free:
    ``Z W_t``) and read once; then the Rayleigh–Ritz step of :func:`gram_krylov_svd`
    is truncated to the smallest rank meeting ``tol_sq``. Returns None as soon as the
    basis would need more than ``max_width`` columns (the caller then takes the exact
    SVD). ``op`` must already be scaled so that ``‖op‖_F`` is near 1.
    """  # numpydoc ignore=PR01,RT01
    from ._qb import _truncation_rank, sq_norm
    from ._randomized import _zeros

    limit = op.n
    cap = limit if max_width is None else min(limit, max_width)
    width0 = min(block or 32, limit)
    if width0 > cap:
        return None
    Z = op.gram_matmat(rand.standard_normal((op.n, width0), op.dtype))
    # the basis is n × L: kept as a list of blocks, joined when needed (copies of the
    # short side only)
    blocks = [next_block(Z, None, rand, xp, overwrite=True)]
    V = blocks[0]
    del Z
    products: list[Any] = []
    energy, extended, err_sq = 0.0, False, norm_sq
    while True:
        Zi = op.gram_matmat(blocks[-1])
        products.append(Zi)
        energy += float(xp.real(xp.sum(xp.conj(blocks[-1]) * Zi)))
        cheap = max(norm_sq - energy, 0.0)
        width = int(V.shape[-1])
        # below the guard the cheap update is rounding: keep the last probe (the space
        # only grows, so it stays an estimate from above) or make one
        if cheap > guard_sq:
            err_sq = cheap
        elif not extended:
            err_sq = _probe_outside(op, V, rand, xp)
        if extended or width >= limit:
            break
        if err_sq <= tol_sq:  # met: one Krylov step on the leading Ritz vectors
            lam, W = _ritz(V, products, xp)
            k0, _ = _truncation_rank(_sqrt_pos(lam, xp), err_sq, tol_sq)
            t = min(width, limit - width, k0 + max(10, k0 // 4))
            if t <= 0:
                break
            new = xp.concat(products, axis=-1) @ W[:, :t]  # AᴴA (V W_t), no read
            extended = True
        else:
            b = block if block else 2 * int(blocks[-1].shape[-1])
            if width + b > cap:
                if cap < limit:
                    return None
                b = cap - width
            if b > Zi.shape[-1]:  # widened with Gaussian directions
                Zi = xp.concat([Zi, rand.standard_normal((op.n, b - Zi.shape[-1]),
                                                         op.dtype)], axis=-1)
            new = Zi[:, :b]
        blocks.append(next_block(new, V, rand, xp))
        V = xp.concat([V, blocks[-1]], axis=-1)
        del new, Zi
    lam, W = _ritz(V, products, xp)
    del products
    S_ritz = _sqrt_pos(lam, xp)
    cheap = max(norm_sq - float(xp.sum(S_ritz**2)), 0.0)
    k, est = _truncation_rank(S_ritz, cheap if cheap > guard_sq else err_sq, tol_sq)
    if k == 0:
        return (_zeros((op.m, 0), V.dtype, V, xp), S_ritz[:0],
                _zeros((0, op.n), V.dtype, V, xp), est)
    if not _gram_resolves(lam, k, xp):
        W = conj_transpose(xp.linalg.svd(_tsqr_r(op, V, xp))[2], xp)
    Vk = V @ W[:, :k]
    U, S, Yh = xp.linalg.svd(op.matmat(Vk), full_matrices=False)
    Vh = conj_transpose(Vk @ conj_transpose(Yh, xp), xp)
    final = max(norm_sq - sq_norm(S, xp), 0.0)
    return U, S, Vh, final if final > guard_sq else est


def _sqrt_pos(lam: Any, xp: Any) -> Any:
    """``sqrt(max(λ, 0))``: Ritz values from Gram eigenvalues."""  # numpydoc ignore=PR01,RT01
    return xp.sqrt(xp.where(lam > 0, lam, xp.zeros_like(lam)))


def _ritz(V: Any, products: list[Any], xp: Any) -> tuple[Any, Any]:
    """Eigenpairs of the Gram matrix ``Vᴴ AᴴA V``, largest first."""  # numpydoc ignore=PR01,RT01
    Z = xp.concat(products, axis=-1) if len(products) > 1 else products[0]
    H = conj_transpose(V, xp) @ Z
    lam, W = xp.linalg.eigh((H + conj_transpose(H, xp)) / 2)
    return xp.flip(lam, axis=-1), xp.flip(W, axis=-1)


def _probe_outside(op: Any, V: Any, rand: Any, xp: Any) -> float:
    """``‖A (I − V Vᴴ)‖_F²`` estimated from 16 Gaussian probes (one pass, unbiased)."""  # numpydoc ignore=PR01,RT01
    from ._qb import sq_norm

    omega = rand.standard_normal((op.n, 16), op.dtype)
    omega = omega - V @ (conj_transpose(V, xp) @ omega)
    return sq_norm(op.matmat(omega), xp) / 16
