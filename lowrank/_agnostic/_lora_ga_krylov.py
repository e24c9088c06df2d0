"""Lean block Krylov SVD for LoRA-GA's top ``2r + 1`` gradient triplets (pure array API).

On 384-1536-wide layers the products with the gradient are cheap (16 columns of a
384 x 384 float32 matrix: ~0.15 ms), so the general randomized SVD's per-block work
(double-precision CholeskyQR with conditioning checks, a Householder QR and an SVD of
the basis) costs as much as the products. This variant keeps only what the LoRA-GA
block needs: a basis on the short side of the gradient, orthogonalised block by block
(block Gram-Schmidt twice, Householder QR after each pass), and one Rayleigh-Ritz step
on the small Gram matrix of the basis' images, in double precision. It returns None
when the Krylov space is numerically rank deficient or a wanted σ is not resolved (tiny
next to σ_1): the caller then uses the general method, which handles both.
Performs no input validation."""

from __future__ import annotations

import math
from typing import Any

from ._linalg import svd_flip

__all__ = ["lean_krylov_triplets"]

# A second Gram-Schmidt pass keeps at least this share of a new direction's norm unless
# the direction lay (numerically) inside the basis already: then the space is deficient.
_KEPT = 0.5


def lean_krylov_triplets(
    g: Any, k: int, *, block: int, depth: int, rand: Any, xp: Any
) -> tuple[Any, Any, Any] | None:
    """Leading ``k`` triplets of real ``g`` (..., m, n), or None to ask for the general path.

    The Krylov basis lives on the short side of ``g`` (cheap projections, a start with no
    null-space component), and the output side ``U``, which holds LoRA-GA's ``B0``
    block ``[r, 2r)`` in the default direction, is the one that gets the extra product:

    - ``m >= n``: basis ``P`` of ``[Ω, (gᵀg) Ω, …]`` and ``Y = g P``; ``V = P E``,
      ``U = Y E / σ``; ``2 depth + 1`` passes.
    - ``m < n``: basis ``Q`` of ``[g Ω, (g gᵀ) g Ω, …]`` and ``W = gᵀ Q``; ``U = Q E``,
      ``V = W E / σ``; ``2 depth + 2`` passes.

    ``E`` and ``σ²`` are the eigenpairs of the small Gram matrix of ``Y`` (or ``W``).
    ``g`` is never transposed or copied. ``block * (depth + 1)`` must not exceed
    ``min(m, n)``.
    """  # numpydoc ignore=PR01,RT01
    mT = xp.matrix_transpose

    def adjoint(y: Any) -> Any:
        return mT(mT(y) @ g)  # gᵀ y as (yᵀ g)ᵀ: g is read row-major, never transposed

    tall = g.shape[-2] >= g.shape[-1]
    if tall:
        step_out, step_in = (lambda b: g @ b), adjoint
    else:
        step_out, step_in = adjoint, (lambda b: g @ b)
    omega = rand.standard_normal((*g.shape[:-2], g.shape[-1], block), g.dtype)
    first = xp.linalg.qr(omega if tall else g @ omega)[0]
    blocks, images, kept = [first], [step_out(first)], []
    basis = first
    for _ in range(depth):
        nxt, least = _orthogonal_block(step_in(_unit_scale(images[-1], xp)), basis, xp)
        kept.append(least)
        blocks.append(nxt)
        basis = xp.concat(blocks, axis=-1)
        images.append(step_out(nxt))
    if kept and not bool(xp.all(xp.stack(kept) > _KEPT)):
        return None
    triplets = _ritz(basis, xp.concat(images, axis=-1), k, xp)
    if triplets is None:
        return None
    on_basis, S, on_images = triplets
    U, V = (on_images, on_basis) if tall else (on_basis, on_images)
    U, Vh = svd_flip(U, mT(V), xp)
    return U, S, Vh


def _unit_scale(W: Any, xp: Any) -> Any:
    """``W`` times a power of two bringing max|W| near 1 per matrix (exact; 0 left alone).

    Only the direction of the next block matters, and ``A W`` of a tiny or huge gradient
    (``~σ²``) would otherwise underflow or overflow.
    """  # numpydoc ignore=PR01,RT01
    top = xp.max(xp.abs(W), axis=(-2, -1), keepdims=True)
    safe = xp.where(top > 0, top, xp.ones_like(top))
    return W * xp.pow(xp.full_like(top, 2.0), -xp.round(xp.log2(safe)))


def _orthogonal_block(Y: Any, Q: Any, xp: Any) -> tuple[Any, Any]:
    """Orthonormal block spanning ``Y``'s directions outside ``Q``; the least kept share.

    Block classical Gram-Schmidt twice, Householder QR after each pass. The returned
    scalar is the smallest ``|R_ii|`` of the second pass over the batch: near 1 when
    every direction was new after the first pass, small when one lay inside ``Q``.
    """  # numpydoc ignore=PR01,RT01
    mT = xp.matrix_transpose
    Z = xp.linalg.qr(Y - Q @ (mT(Q) @ Y))[0]
    Z, R = xp.linalg.qr(Z - Q @ (mT(Q) @ Z))
    return Z, xp.min(xp.abs(xp.linalg.diagonal(R)))


def _ritz(basis: Any, images: Any, k: int, xp: Any) -> tuple[Any, Any, Any] | None:
    """Top-``k`` ``(basis E, σ, images E / σ)``, or None if σ_k is unresolved.

    ``images`` is ``g`` (or ``gᵀ``) times the orthonormal ``basis``; its Gram matrix
    ``E Λ Eᵀ`` is formed and factorised in double precision. Its eigenvalues carry an
    absolute error of ``O(eps64 σ_1²)``, so σ_k is resolved while ``σ_k > sqrt(eps) σ_1``
    of the data's (single or double) precision, the floor at which ``images E / σ``
    stays accurate; those columns are orthonormal because the Gram matrix is that of
    the stored ``images``.
    """  # numpydoc ignore=PR01,RT01
    wide = xp.astype(images, xp.float64)
    lam, E = xp.linalg.eigh(xp.matrix_transpose(wide) @ wide)
    Ek = xp.flip(E[..., -k:], axis=-1)
    S = xp.sqrt(xp.where(lam > 0, lam, xp.zeros_like(lam)))
    S = xp.flip(S[..., -k:], axis=-1)
    floor = math.sqrt(float(xp.finfo(images.dtype).eps))
    if not bool(xp.all(S[..., -1] > floor * S[..., 0])):
        return None
    on_images = xp.astype((wide @ Ek) / S[..., None, :], images.dtype)
    return basis @ xp.astype(Ek, basis.dtype), xp.astype(S, images.dtype), on_images
