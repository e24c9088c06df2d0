"""Small array-API linear-algebra building blocks shared by several topics."""

from __future__ import annotations

from typing import Any

__all__ = ["conj_transpose", "svd_flip"]


def conj_transpose(a: Any, xp: Any) -> Any:
    """Conjugate transpose of the last two axes."""  # numpydoc ignore=PR01,RT01
    t = xp.matrix_transpose(a)
    return xp.conj(t) if xp.isdtype(a.dtype, "complex floating") else t


def svd_flip(U: Any, Vh: Any, xp: Any) -> tuple[Any, Any]:
    """Deterministic signs: the largest-magnitude entry of each column of U is positive.

    This is scikit-learn's ``svd_flip(u_based_decision=True)`` rule; batched over
    leading axes. For complex inputs the column is rotated by the conjugate phase of
    that entry, making it real and positive. Performs no input validation.
    """  # numpydoc ignore=PR01,RT01
    if U.shape[-1] == 0 or U.shape[-2] == 0:
        return U, Vh
    idx = xp.argmax(xp.abs(U), axis=-2, keepdims=True)  # (..., 1, k)
    pivot = xp.take_along_axis(U, idx, axis=-2)  # (..., 1, k)
    if xp.isdtype(U.dtype, "complex floating"):
        phase = pivot / xp.astype(xp.abs(pivot), U.dtype)
        phase = xp.where(xp.abs(pivot) == 0, xp.ones_like(phase), phase)
        return U * xp.conj(phase), Vh * xp.matrix_transpose(phase)
    signs = xp.where(pivot < 0, -xp.ones_like(pivot), xp.ones_like(pivot))
    return U * signs, Vh * xp.matrix_transpose(signs)
