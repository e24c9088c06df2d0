"""Block orthonormalisation for the randomized range finders (pure array API).

Well-conditioned blocks take CholeskyQR at GEMM speed. A block that brings (numerically)
no new direction -- a converged Krylov block, a matrix whose range is exhausted, a sketch
of a matrix with few nonzero rows -- is detected and its empty directions are replaced by
fresh Gaussian ones orthogonalised against the basis, so a basis is never padded with
normalised rounding noise that lies inside the span it already has.
"""

from __future__ import annotations

import math
from typing import Any

from ._linalg import conj_transpose

__all__ = ["next_block", "orthonormalize", "pow2_scale", "project_out", "sqrt_eps", "thin_qr"]

# A new direction counts as real when the block keeps more than NOISE·eps of its norm
# after projection: two projections leave O(eps·sqrt(L)) rounding, far below this, and
# a direction this small cannot be resolved by later products anyway.
NOISE = 128.0


def _gram(Y: Any, xp: Any) -> Any:
    """``Yᴴ Y``."""  # numpydoc ignore=PR01,RT01
    return conj_transpose(Y, xp) @ Y


def _wider(dtype: Any, xp: Any) -> Any:
    """Double-precision twin of a single-precision dtype, else None."""  # numpydoc ignore=PR01,RT01
    if dtype == xp.float32:
        return xp.float64
    if dtype == xp.complex64:
        return xp.complex128
    return None


def _cholesky_qr(Y: Any, xp: Any, mixed: bool = False) -> tuple[Any, Any] | None:
    """(Q, R) of CholeskyQR, or None when the Gram matrix is too ill-conditioned for it.

    With ``mixed``, single precision forms the small Gram matrix, its Cholesky factor and
    inverse in double (r × r work, negligible next to the products): the factor is then
    exact enough that Q loses only O(eps·cond) orthogonality instead of O(eps·cond²).
    The block is first scaled by a power of two when its entries are so large or small
    that the Gram matrix would overflow or underflow (exact, and undone in R).
    """  # numpydoc ignore=PR01,RT01
    scale = pow2_scale(Y, xp)
    Ys = Y if scale is None else Y * scale
    wide = _wider(Y.dtype, xp) if mixed else None
    Yw = Ys if wide is None else xp.astype(Ys, wide)
    try:
        L = xp.linalg.cholesky(_gram(Yw, xp))
    except Exception:
        return None
    d = xp.abs(xp.linalg.diagonal(L))
    # diag(L) ratios bound cond(Y) from below; beyond eps^-1/4 (working precision Gram) or
    # eps^-1/2 (double Gram of single data) one CholeskyQR round is not safe
    eps = float(xp.finfo(Y.dtype).eps)
    tiny = eps ** 0.25 if wide is None else eps ** 0.5
    ok = xp.all(d > tiny * xp.max(d, axis=-1, keepdims=True))  # False on NaN too
    if not bool(ok):
        return None
    Linv_h = conj_transpose(xp.linalg.inv(L), xp)
    L_h = conj_transpose(L, xp)
    if wide is not None:
        Linv_h, L_h = xp.astype(Linv_h, Y.dtype), xp.astype(L_h, Y.dtype)
    return Ys @ Linv_h, (L_h if scale is None else L_h / scale)


def pow2_scale(Y: Any, xp: Any, window: int = 4) -> Any | None:
    """Per-matrix power of two bringing ``max|Y|`` near 1, or None if all are safe already.

    "Safe" is ``2^±(maxexp / window)``: squares and sums of squares of such entries stay
    far from overflow and underflow. Returns an array of shape ``(..., 1, 1)`` (Y's dtype).
    """  # numpydoc ignore=PR01,RT01
    if Y.shape[-1] == 0 or Y.shape[-2] == 0:
        return None
    real = xp.abs(Y[..., :1, :1]).dtype
    top = math.log2(float(xp.finfo(real).max)) / window
    if real == Y.dtype:  # real data: max |y| from two reductions, no block-sized |Y|
        big = xp.maximum(xp.max(Y, axis=(-2, -1), keepdims=True),
                         -xp.min(Y, axis=(-2, -1), keepdims=True))
    else:
        big = xp.max(xp.abs(Y), axis=(-2, -1), keepdims=True)
    finite = xp.logical_and(xp.isfinite(big), big > 0)
    if bool(xp.all(xp.logical_or(xp.logical_not(finite),
                                 xp.logical_and(big < 2.0 ** top, big > 2.0 ** -top)))):
        return None
    exponent = xp.round(xp.log2(xp.where(finite, big, xp.ones_like(big))))
    return xp.astype(xp.pow(xp.full_like(big, 2.0), -exponent), Y.dtype)


def thin_qr(Y: Any, xp: Any, mixed: bool = False) -> tuple[Any, Any]:
    """Thin QR by CholeskyQR2 (GEMM speed), Householder QR when ill-conditioned."""  # numpydoc ignore=PR01,RT01
    first = _cholesky_qr(Y, xp, mixed) if Y.shape[-1] > 0 else None
    if first is not None:
        second = _cholesky_qr(first[0], xp)  # cond ≈ 1 now: working precision restores O(eps)
        if second is not None:
            return second[0], second[1] @ first[1]
    return xp.linalg.qr(Y)


def orthonormalize(Y: Any, xp: Any) -> Any:
    """Orthonormal basis of range(Y) (Q of :func:`thin_qr`)."""  # numpydoc ignore=PR01,RT01
    return Y if Y.shape[-1] == 0 else thin_qr(Y, xp)[0]


def project_out(Y: Any, Q: Any | None, xp: Any) -> Any:
    """``Y − Q Qᴴ Y`` (classical block Gram–Schmidt step; Q may be None)."""  # numpydoc ignore=PR01,RT01
    if Q is None or Q.shape[-1] == 0:
        return Y
    return Y - Q @ (conj_transpose(Q, xp) @ Y)


def next_block(Y: Any, Q: Any | None, rand: Any, xp: Any, *, overwrite: bool = False) -> Any:
    """Orthonormal block orthogonal to ``Q`` holding the new directions of ``Y``.

    Fast path (block classical Gram–Schmidt twice): project, CholeskyQR, project the
    normalised block again, CholeskyQR. It is accepted only when every direction is real
    (the Cholesky factor of the projected block exceeds ``NOISE·eps`` of the block's norm
    before projection) and the normalised block is well away from ``Q`` (‖Qᴴ Z‖_F <= 1/2,
    so the second projection loses at most O(eps) orthogonality). Otherwise see
    :func:`_deflated_block`. The result has as many columns as ``Y``. With
    ``overwrite``, ``Y`` (the caller's own product) is projected in place: with a tall
    basis every block-sized temporary counts in the peak memory.
    """  # numpydoc ignore=PR01,RT01
    if Y.shape[-1] == 0:
        return Y
    size = xp.linalg.matrix_norm(Y)[..., None]
    Y1 = _project_in_place(Y, Q, xp) if overwrite else project_out(Y, Q, xp)
    first = _cholesky_qr(Y1, xp, mixed=True)
    if first is not None and _real_directions(first[1], size, Y.dtype, xp):
        Z = first[0]
        if Q is None:
            second = _cholesky_qr(Z, xp)
            if second is not None:
                return second[0]
        else:
            C = conj_transpose(Q, xp) @ Z
            if bool(xp.all(xp.linalg.matrix_norm(C) <= 0.5)):
                second = _cholesky_qr(_project_in_place(Z, Q, xp, C), xp)
                if second is not None:
                    return second[0]
    return _deflated_block(Y1, Q, size, rand, xp)


def _project_in_place(Y: Any, Q: Any | None, xp: Any, C: Any = None) -> Any:
    """``Y −= Q C`` with ``C = Qᴴ Y`` unless given (Y overwritten; Q may be None)."""  # numpydoc ignore=PR01,RT01
    if Q is None or Q.shape[-1] == 0:
        return Y
    Y -= Q @ (conj_transpose(Q, xp) @ Y if C is None else C)
    return Y


def _real_directions(R: Any, size: Any, dtype: Any, xp: Any) -> bool:
    """Whether every diagonal entry of R exceeds NOISE·eps·size (for every matrix)."""  # numpydoc ignore=PR01,RT01
    floor = NOISE * float(xp.finfo(dtype).eps) * size
    return bool(xp.all(xp.abs(xp.linalg.diagonal(R)) > floor))


def _deflated_block(Y1: Any, Q: Any | None, size: Any, rand: Any, xp: Any) -> Any:
    """Rank-revealing path: keep the real directions of ``Y1``, replace the rest at random.

    ``Y1`` (already projected once) is projected again and factorised as ``P Σ Wᴴ``
    (Householder QR, then an SVD of the small factor), ``P`` ordered by ``Σ``. Directions
    with ``σ_j <= NOISE·eps·‖Y‖`` carry nothing but rounding; they are replaced by Gaussian
    vectors. The block is projected against ``Q`` twice more and orthonormalised by
    Householder QR, which keeps the span of the leading (real) columns.
    """  # numpydoc ignore=PR01,RT01
    Y2 = project_out(Y1, Q, xp)
    Qy, Ry = xp.linalg.qr(Y2)
    Ur, s, _ = xp.linalg.svd(Ry)
    floor = NOISE * float(xp.finfo(Y1.dtype).eps) * size
    keep = (s > floor)[..., None, :]
    G = rand.standard_normal(tuple(Y1.shape), Y1.dtype)
    Z = xp.where(keep, Qy @ Ur, G)
    Z = project_out(project_out(Z, Q, xp), Q, xp)
    return xp.linalg.qr(Z).Q


def sqrt_eps(dtype: Any, xp: Any) -> float:
    """``sqrt(eps)`` of a floating dtype."""  # numpydoc ignore=PR01,RT01
    return math.sqrt(float(xp.finfo(dtype).eps))
