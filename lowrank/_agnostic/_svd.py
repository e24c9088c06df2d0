"""Pure array-API bodies for exact truncated SVD, pseudo-inverse and optimal factors.

Nothing here validates its input: the public layer in ``lowrank._svd`` does that.
"""

from __future__ import annotations

from typing import Any

from ._linalg import conj_transpose, svd_flip

__all__ = [
    "default_rtol",
    "optimal_factor_left",
    "optimal_factor_right",
    "pinv",
    "pseudo_inverse_values",
    "thin_svd",
    "truncated_svd",
]


def thin_svd(a: Any, xp: Any) -> tuple[Any, Any, Any]:
    """Thin SVD (``full_matrices=False``; the standard says True)."""  # numpydoc ignore=PR01,RT01
    return xp.linalg.svd(a, full_matrices=False)


def truncated_svd(a: Any, rank: int, xp: Any) -> tuple[Any, Any, Any]:
    """See docstring in `lowrank._svd`.

    Performs no input validation. Eckart–Young: keep the leading ``rank``
    triplets of a thin SVD, then fix signs with the sklearn ``svd_flip`` rule.
    """  # numpydoc ignore=PR01,RT01
    U, S, Vh = thin_svd(a, xp)
    U, S, Vh = U[..., :rank], S[..., :rank], Vh[..., :rank, :]
    U, Vh = svd_flip(U, Vh, xp)
    return U, S, Vh


def default_rtol(shape: tuple[int, ...], dtype: Any, xp: Any) -> float:
    """NumPy's relative cutoff ``max(m, n) * eps``."""  # numpydoc ignore=PR01,RT01
    return max(shape[-2], shape[-1]) * float(xp.finfo(dtype).eps)


def pseudo_inverse_values(S: Any, rtol: float, xp: Any) -> Any:
    """``S^†``: 1/σ where σ > rtol·σ_1, else 0."""  # numpydoc ignore=PR01,RT01
    cutoff = rtol * xp.max(S, axis=-1, keepdims=True)
    keep = cutoff < S
    # Divide by a safe value so that no division by zero is ever evaluated.
    inv = 1.0 / xp.where(keep, S, xp.ones_like(S))
    return xp.where(keep, inv, xp.zeros_like(S))


def pinv(a: Any, rtol: float, xp: Any) -> Any:
    """See docstring in `lowrank._svd`.

    Performs no input validation. SVD route ``A^† = V Σ^† Uᴴ``.
    """  # numpydoc ignore=PR01,RT01
    U, S, Vh = thin_svd(a, xp)
    s_inv = xp.astype(pseudo_inverse_values(S, rtol, xp), a.dtype)
    return conj_transpose(Vh, xp) @ (s_inv[..., :, None] * conj_transpose(U, xp))


def optimal_factor_right(a: Any, m: Any, rtol: float, xp: Any) -> Any:
    """See docstring in `lowrank._svd`.

    Performs no input validation. ``B = A^† M = V (Σ^† (Uᴴ M))``, evaluated
    right to left so that ``A^†`` itself is never formed.
    """  # numpydoc ignore=PR01,RT01
    U, S, Vh = thin_svd(a, xp)
    s_inv = xp.astype(pseudo_inverse_values(S, rtol, xp), a.dtype)
    return conj_transpose(Vh, xp) @ (s_inv[..., :, None] * (conj_transpose(U, xp) @ m))


def optimal_factor_left(b: Any, m: Any, rtol: float, xp: Any) -> Any:
    """See docstring in `lowrank._svd`.

    Performs no input validation. ``A = M B^† = ((M V) Σ^†) Uᴴ``, evaluated
    left to right so that ``B^†`` itself is never formed.
    """  # numpydoc ignore=PR01,RT01
    U, S, Vh = thin_svd(b, xp)
    s_inv = xp.astype(pseudo_inverse_values(S, rtol, xp), b.dtype)
    return ((m @ conj_transpose(Vh, xp)) * s_inv[..., None, :]) @ conj_transpose(U, xp)
