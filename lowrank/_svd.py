"""SVD-optimal approximation: result types (shared), exact truncated SVD, optimal factors."""

from __future__ import annotations

from typing import NamedTuple

from ._lib._typing import Array

__all__ = ["LowRankApprox", "SVDResult"]


class SVDResult(NamedTuple):
    """Thin (truncated) singular value decomposition ``a ≈ U @ diag(S) @ Vh``.

    Attributes
    ----------
    U : array of shape (..., m, rank)
        Left singular vectors, orthonormal columns.
    S : array of shape (..., rank)
        Singular values, real, non-increasing.
    Vh : array of shape (..., rank, n)
        Right singular vectors (conjugate-transposed), orthonormal rows.
    """

    U: Array
    S: Array
    Vh: Array


class LowRankApprox(NamedTuple):
    """Low-rank approximation ``a ≈ U @ diag(S) @ Vh`` with an error report.

    Attributes
    ----------
    U : array of shape (m, rank)
        Left singular vectors, orthonormal columns.
    S : array of shape (rank,)
        Singular values, non-increasing.
    Vh : array of shape (rank, n)
        Right singular vectors, orthonormal rows.
    rank : int
        The rank reached (fixed, or chosen to meet ``rtol``).
    error_estimate : float
        Estimated relative Frobenius error ``‖a − U diag(S) Vh‖_F / ‖a‖_F``.
    passes : int
        Number of full reads of ``a``.
    """

    U: Array
    S: Array
    Vh: Array
    rank: int
    error_estimate: float
    passes: int
