"""Randomized range finders and SVD: subspace iteration and block Krylov (pure array API).

Nothing here validates its input: the public layer in ``lowrank._randomized`` does that.
``op`` is an :class:`~lowrank._agnostic._operator.Operator` with ``m >= n`` already
arranged by the caller (wide inputs are transposed there).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ._gram_krylov import gram_krylov_svd
from ._linalg import conj_transpose, svd_flip
from ._orthogonal import next_block, orthonormalize, pow2_scale, project_out, sqrt_eps, thin_qr

__all__ = [
    "Basis",
    "auto_plan",
    "empty",
    "krylov_basis",
    "orthonormalize",
    "project_out",
    "randomized_svd",
    "range_finder",
    "ritz_residual",
    "sqrt_eps",
    "subspace_basis",
    "svd_from_basis",
    "thin_qr",
]

# Default Krylov depth (extensions) and block width ceil(rank / 2) + n_oversamples:
# measured in bench/peers/compare_svd.py (flat and decaying spectra, rank 32-64).
KRYLOV_DEPTH = 5
SUBSPACE_DEPTH = 4
# From this depth on, dense input takes the short-side Krylov basis (``_gram_krylov``):
# n_iter + 4 reads of a against 2·n_iter + 2 for the long-side basis, so never more.
SHORT_SIDE_FROM = 2


class Basis(NamedTuple):
    """Orthonormal ``Q``, ``W = opᴴ Q`` (of the scaled operator), the exact power-of-two
    scale of that operator (None: unscaled) and the residual estimate (None: not made)."""  # numpydoc ignore=PR01

    Q: Any
    W: Any
    scale: Any
    residual: float | None


class _Scaled:
    """``c · op`` for a power of two ``c``: exact, and keeps every product near 1."""  # numpydoc ignore=PR01

    def __init__(self, op: Any, factor: Any) -> None:
        self._op, self._factor = op, factor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._op, name)

    def matmat(self, x: Any) -> Any:
        """``c · op @ x``."""  # numpydoc ignore=PR01,RT01
        return self._op.matmat(x) * self._factor

    def rmatmat(self, y: Any) -> Any:
        """``c · opᴴ @ y``."""  # numpydoc ignore=PR01,RT01
        return self._op.rmatmat(y) * self._factor

    def gram_matmat(self, x: Any) -> Any:
        """``c² · opᴴ op @ x``, scaled between the two products."""  # numpydoc ignore=PR01,RT01
        return self._op.gram_matmat(x, self._factor)

    def row_chunk_matmat(self, x: Any) -> Any:
        """``c · op @ x`` row chunk by row chunk (a generator)."""  # numpydoc ignore=PR01,RT01
        return self._op.row_chunk_matmat(x, self._factor)


def _sketch(op: Any, width: int, rand: Any, xp: Any) -> tuple[Any, Any, Any]:
    """``(op', Y, c)``: ``Y = op' Ω`` where ``op' = c·op`` is rescaled when ``op Ω`` is
    near the overflow or underflow range (c None otherwise). Later products of ``op'``
    then stay near 1: Krylov blocks ``(AAᴴ)^j AΩ`` would otherwise over/underflow."""  # numpydoc ignore=PR01,RT01
    omega = rand.standard_normal((*op.batch, op.n, width), op.dtype)
    Y = op.matmat(omega)
    factor = pow2_scale(Y, xp, window=8)
    if factor is None:
        return op, Y, None
    return _Scaled(op, factor), Y * factor, factor


def range_finder(op: Any, size: int, n_power_iter: int, rand: Any, xp: Any) -> Any:
    """HMT 2011 Alg. 4.4 (QR-normalised subspace iteration); 2·n_power_iter + 1 passes."""  # numpydoc ignore=PR01,RT01
    return _subspace(op, size, n_power_iter, rand, xp)[0]


def _subspace(op: Any, size: int, n_power_iter: int, rand: Any,
              xp: Any) -> tuple[Any, Any, Any]:
    """Range finder on the (possibly rescaled) operator: ``(Q, op', scale)``."""  # numpydoc ignore=PR01,RT01
    op, Y, factor = _sketch(op, size, rand, xp)
    Q = orthonormalize(Y, xp)
    for _ in range(n_power_iter):
        Z = orthonormalize(op.rmatmat(Q), xp)
        Q = orthonormalize(op.matmat(Z), xp)
    return Q, op, factor


def subspace_basis(op: Any, size: int, n_power_iter: int, rand: Any, xp: Any) -> Basis:
    """Range finder plus W = opᴴ Q (= Bᴴ for B = Qᴴ op): 2·n_power_iter + 2 passes."""  # numpydoc ignore=PR01,RT01
    Q, op, factor = _subspace(op, size, n_power_iter, rand, xp)
    return Basis(Q, op.rmatmat(Q), factor, None)


def krylov_basis(op: Any, block: int, n_iter: int, rand: Any, xp: Any, *,
                 rank: int = 0, tol: float | None = None) -> Basis:
    """Block Krylov basis of ``[AΩ, (AAᴴ)AΩ, …, (AAᴴ)^q AΩ]`` and W = opᴴ Q (Musco & Musco 2015).

    Every block is orthogonalised against the previous ones (:func:`next_block`: blocks
    without new directions get random ones instead), and the products ``opᴴ Q_i`` made
    to extend the space are kept: together they are Bᴴ = (Qᴴ A)ᴴ, so only the last block
    needs an extra product. Passes: 2·n_iter + 2, the last of width ``block``. With
    ``tol``, the forward products ``A W`` are kept too; after each extension they give
    the residuals of the top-``rank`` Ritz triplets (:func:`ritz_residual`) and the space
    stops growing once that is at most ``tol`` (so 2·it + 3 passes after ``it``
    extensions, one more than without ``tol``).
    """  # numpydoc ignore=PR01,RT01
    limit = min(op.m, op.n)
    op, Y, factor = _sketch(op, block, rand, xp)
    # One buffer for the whole basis, filled block by block: concatenating at every
    # extension would hold the old and the new basis at once (2x the basis in memory).
    buf = _zeros((*op.batch, op.m, min(limit, block * (n_iter + 1))), Y.dtype, Y, xp)
    start, width = 0, _store(buf, 0, next_block(Y, None, rand, xp, overwrite=True))
    del Y
    Ws, AW, residual = [], [], None
    for it in range(n_iter + 1):
        Q = buf[..., :, :width]
        Ws.append(op.rmatmat(buf[..., :, start:width]))
        room = limit - width
        if tol is None and (room <= 0 or it == n_iter):
            break
        Y = op.matmat(Ws[-1])
        if tol is not None:
            AW.append(Y)
            if width >= rank:  # never stop short of rank columns
                residual = ritz_residual(Q, xp.concat(Ws, axis=-1), xp.concat(AW, axis=-1),
                                         rank, xp)
                if residual <= tol:
                    break
            if room <= 0 or it == n_iter:
                break
        # Y is overwritten unless the tol rule keeps it (in AW)
        Qi = next_block(Y[..., :room] if room < Y.shape[-1] else Y, Q, rand, xp,
                        overwrite=tol is None)
        del Y, Q
        start, width = width, _store(buf, width, Qi)
        del Qi
    Q = buf if width == buf.shape[-1] else buf[..., :, :width]
    return Basis(Q, xp.concat(Ws, axis=-1) if len(Ws) > 1 else Ws[0], factor, residual)


def _zeros(shape: tuple[int, ...], dtype: Any, like: Any, xp: Any) -> Any:
    """Zero array on the device of ``like``."""  # numpydoc ignore=PR01,RT01
    from .._lib._compat import device

    return xp.zeros(shape, dtype=dtype, device=device(like))


def _store(buf: Any, start: int, block: Any) -> int:
    """Write ``block`` into the columns ``start:`` of ``buf``; return the new width."""  # numpydoc ignore=PR01,RT01
    end = start + int(block.shape[-1])
    buf[..., :, start:end] = block
    return end


def ritz_residual(Q: Any, W: Any, AW: Any, rank: int, xp: Any) -> float:
    """Largest ``‖A v_j − σ_j u_j‖ / σ_1`` over the top-``rank`` Ritz triplets of span(Q).

    With ``B = Qᴴ A = Wᴴ`` and ``B Bᴴ = Wᴴ W = Y Λ Yᴴ``: ``u_j = Q y_j``, ``σ_j² = λ_j``
    and ``v_j = W y_j / σ_j``, so ``Aᴴ u_j = σ_j v_j`` exactly and the whole residual is
    ``A v_j − σ_j u_j = (AW y_j − λ_j Q y_j) / σ_j``, from the kept products ``AW``. Each
    ``σ_j`` is then within ``‖r_j‖`` of a singular value of ``A`` (the triplet is exact
    for ``A − r_j v_jᴴ``). Triplets with ``σ_j <= sqrt(eps)·σ_1`` are not resolved by the
    Gram matrix and are left out. Returns the largest over a batch.
    """  # numpydoc ignore=PR01,RT01
    if rank == 0:
        return 0.0
    lam, V = xp.linalg.eigh(conj_transpose(W, xp) @ W)
    Vk = xp.flip(V[..., -rank:], axis=-1)
    lk = xp.flip(lam[..., -rank:], axis=-1)
    lk = xp.where(lk > 0, lk, xp.zeros_like(lk))
    R = AW @ Vk - Q @ (Vk * xp.astype(lk, Vk.dtype)[..., None, :])
    s = xp.sqrt(lk)
    top = s[..., :1]
    resolved = s > sqrt_eps(s.dtype, xp) * top
    den = xp.where(resolved, s * top, xp.ones_like(s))
    rel = xp.where(resolved, xp.linalg.vector_norm(R, axis=-2) / den, xp.zeros_like(s))
    return float(xp.max(rel))


def svd_from_basis(Q: Any, W: Any, rank: int, xp: Any) -> tuple[Any, Any, Any]:
    """Rank-``rank`` SVD of ``Q B`` given ``W = Bᴴ`` (n × L): one thin SVD of the tall W.

    ``W = P Σ Zᴴ`` gives ``Q B = (Q Z) Σ Pᴴ``. W is factorised by LAPACK's SVD (backward
    stable, Householder inside) and not by CholeskyQR: the Cholesky factor of ``Wᴴ W``
    would carry the small singular values of ``B`` only to ``eps·σ_1² / σ_j``, and at
    ``rank = min(m, n)`` that is the whole residual (measured: up to 1e7 eps on a 0.7^i
    spectrum). W has at most ``min(m, n)`` rows, so this costs O(min(m, n)·L²), less
    than one pass over ``a``.
    """  # numpydoc ignore=PR01,RT01
    P, S, Zh = xp.linalg.svd(W, full_matrices=False)
    U = Q @ conj_transpose(Zh[..., :rank, :], xp)
    Vh = conj_transpose(P[..., :rank], xp)
    return U, S[..., :rank], Vh


def auto_plan(op: Any, rank: int, n_oversamples: int, n_power_iter: int | None,
              method: str, block_size: int | None = None) -> tuple[str, int, int]:
    """(method, block or sketch width, iterations) for the automatic defaults.

    Block Krylov spends the same products as subspace iteration but converges far faster,
    so "auto" always picks it. Its block is ``⌈rank/2⌉ + n_oversamples`` columns (or
    ``block_size``) with ``KRYLOV_DEPTH`` extensions, widened if needed so that the
    Krylov space holds at least ``rank + n_oversamples`` columns (``rank`` with an
    explicit ``block_size``). Subspace iteration sketches
    ``rank + n_oversamples`` columns. Both are capped at ``min(m, n)``.
    """  # numpydoc ignore=PR01,RT01
    method = "block_krylov" if method == "auto" else method
    limit = min(op.m, op.n)
    if method == "block_krylov":
        n_iter = KRYLOV_DEPTH if n_power_iter is None else n_power_iter
        if block_size is None:  # the space holds rank + n_oversamples columns at least
            width = max(math.ceil(rank / 2) + n_oversamples,
                        math.ceil((rank + n_oversamples) / (n_iter + 1)))
        else:
            width = max(block_size, math.ceil(rank / (n_iter + 1)), 1)
    else:
        width = rank + n_oversamples
        n_iter = SUBSPACE_DEPTH if n_power_iter is None else n_power_iter
    return method, min(width, limit), n_iter


def randomized_svd(op: Any, rank: int, *, n_oversamples: int, n_power_iter: int | None,
                   method: str, rand: Any, xp: Any, block_size: int | None = None,
                   tol: float | None = None) -> tuple[Any, Any, Any]:
    """See docstring in `lowrank._randomized` (``tol`` needs the block Krylov method)."""  # numpydoc ignore=PR01,RT01
    return randomized_svd_info(op, rank, n_oversamples=n_oversamples,
                               n_power_iter=n_power_iter, method=method, rand=rand, xp=xp,
                               block_size=block_size, tol=tol)[:3]


def randomized_svd_info(op: Any, rank: int, *, n_oversamples: int, n_power_iter: int | None,
                        method: str, rand: Any, xp: Any, block_size: int | None = None,
                        tol: float | None = None) -> tuple[Any, Any, Any, float | None]:
    """``(U, S, Vh, residual)``: :func:`randomized_svd` plus the Ritz residual estimate."""  # numpydoc ignore=PR01,RT01
    if rank == 0 or op.m == 0 or op.n == 0:
        return (*empty(op, rank, xp), 0.0 if tol is not None else None)
    method, width, n_iter = auto_plan(op, rank, n_oversamples, n_power_iter, method, block_size)
    blocks = n_iter + 1 if method == "block_krylov" else 1
    if tol is None and width * blocks >= op.n:  # the basis would span everything: exact
        return _finish(op, *full_svd(op, rank, xp), xp)
    if method == "block_krylov" and tol is None and op.dense and n_iter >= SHORT_SIDE_FROM:
        # short-side basis: n × L instead of m × L, one read of a per AᴴA product
        U, S, Vh, scale = gram_krylov_svd(op, width, n_iter, rank, rand, xp)
        if scale is not None:
            S = S / xp.abs(scale)[..., 0]
        return _finish(op, U, S, Vh, None, xp)
    if method == "block_krylov":
        basis = krylov_basis(op, width, n_iter, rand, xp, rank=rank, tol=tol)
    else:
        basis = subspace_basis(op, width, n_iter, rand, xp)
    if basis.Q.shape[-1] >= op.n:  # full (tol not met earlier): exact right-side Ritz
        P = xp.linalg.svd(basis.W)[0]  # any orthogonal n × n matrix would do
        return _finish(op, *full_svd(op, rank, xp, P), xp)
    U, S, Vh = svd_from_basis(basis.Q, basis.W, rank, xp)
    scale, residual = basis.scale, basis.residual
    del basis  # the m × L basis goes before the sign fix makes its m × rank temporaries
    if scale is not None:  # singular values of c·a: divide by the power of two c
        S = S / xp.abs(scale)[..., 0]
    return _finish(op, U, S, Vh, residual, xp)


def _finish(op: Any, U: Any, S: Any, Vh: Any, residual: float | None,
            xp: Any) -> tuple[Any, Any, Any, float | None]:
    """Factors of ``op`` as factors of the caller's ``a``, with sklearn's signs."""  # numpydoc ignore=PR01,RT01
    if op.transposed:  # we factorised aᴴ = U S Vh, so a = Vhᴴ S Uᴴ
        U, Vh = conj_transpose(Vh, xp), conj_transpose(U, xp)
    U, Vh = svd_flip(U, Vh, xp)
    return U, S, Vh, residual


def full_svd(op: Any, rank: int, xp: Any,
             P: Any = None) -> tuple[Any, Any, Any, float | None]:
    """Exact rank-``rank`` SVD of ``op`` when a basis would span all of ``range(opᴴ)``.

    A Krylov basis as wide as ``n`` must span ``range(op)`` exactly, and it does so only
    to ``eps·‖Y‖ / ‖Y − QQᴴY‖`` per block (each block is mostly inside the previous
    ones): residuals of 500-3000 eps were measured at ``rank = min(m, n)`` on Gaussian
    matrices. Here ``op P`` is formed for an orthogonal n × n ``P`` (one pass; the
    identity when None) and factorised by LAPACK's SVD, which is backward stable; dense
    ``a`` is factorised as it is. With ``P`` (the ``tol`` path) the Ritz residual of the
    result is returned, None otherwise.
    """  # numpydoc ignore=PR01,RT01
    if P is None and op.dense:
        if op.pending_check():
            op.check_norm(0.0 if bool(xp.all(xp.isfinite(op.a))) else math.inf)
        op.count_pass()
        Ua, S, Vha = xp.linalg.svd(op.a, full_matrices=False)  # LAPACK scales internally
        U, Vh = (conj_transpose(Vha, xp), conj_transpose(Ua, xp)) if op.transposed else (Ua, Vha)
        return U[..., :rank], S[..., :rank] * op.scale_factor, Vh[..., :rank, :], None
    want_residual = P is not None
    if P is None:  # SciPy sparse or LinearOperator: NumPy
        P = xp.eye(op.n, dtype=op.dtype)
    M = op.matmat(P)
    c = pow2_scale(M, xp)
    Ms = M if c is None else M * c
    U, S, Zh = xp.linalg.svd(Ms, full_matrices=False)
    U, S, Zh = U[..., :rank], S[..., :rank], Zh[..., :rank, :]
    residual = None
    if want_residual:
        R = Ms @ conj_transpose(Zh, xp) - U * xp.astype(S, U.dtype)[..., None, :]
        top = xp.where(S[..., :1] > 0, S[..., :1], xp.ones_like(S[..., :1]))
        residual = float(xp.max(xp.linalg.vector_norm(R, axis=-2) / top))
    S = S if c is None else S / xp.abs(c)[..., 0]
    return U, S, conj_transpose(P @ conj_transpose(Zh, xp), xp), residual


def empty(op: Any, rank: int, xp: Any) -> tuple[Any, Any, Any]:
    """Zero factors of the right shapes (rank 0, or an empty matrix padded with zeros)."""  # numpydoc ignore=PR01,RT01
    m, n = (op.n, op.m) if op.transposed else (op.m, op.n)
    real = xp.float32 if op.dtype in (xp.float32, xp.complex64) else xp.float64
    dev = None if not op.dense else _device(op.a)
    zeros = (lambda s, dt: xp.zeros(s, dtype=dt)) if dev is None else (
        lambda s, dt: xp.zeros(s, dtype=dt, device=dev))
    return zeros((*op.batch, m, rank), op.dtype), zeros((*op.batch, rank), real), zeros(
        (*op.batch, rank, n), op.dtype)


def _device(a: Any) -> Any:
    from .._lib._compat import device

    return device(a)
