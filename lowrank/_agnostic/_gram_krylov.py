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

__all__ = ["gram_krylov_svd"]

# The Gram matrix Vᴴ AᴴA V is trusted when rounding in it (taken as
# GRAM_ROUNDING·eps·sqrt(λ_1·Σλ_j), 20x the largest error measured) cannot lower the energy captured by the top
# ``rank`` Ritz vectors by more than RELATIVE_LOSS of the error left, or by more than the
# square of ABSOLUTE_LOSS·eps·σ_1 per triplet.
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
    about ``eps·σ_1²``; where that could lose a visible part of the error (the rank-k
    error left is near ``eps·σ_1²/σ_k``: a tiny tail below a wide spectrum), the
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
    H = conj_transpose(V, xp) @ (xp.concat(products, axis=-1) if len(products) > 1
                                 else products[0])
    del products
    H = (H + conj_transpose(H, xp)) / 2
    lam, W = xp.linalg.eigh(H)
    lam, W = xp.flip(lam, axis=-1), xp.flip(W, axis=-1)
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
