"""Naive float64 NumPy oracles (the stumpy ``naive.py`` pattern): obviously correct, slow.

Every function takes host arrays, works in float64 (complex128 for complex input) and
follows the textbook formula literally (the formulas are derived on the docs' theory pages).
Other topics may append their oracles here.
"""

from __future__ import annotations

import numpy as np


def _f64(a):
    a = np.asarray(a)
    return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)


def singular_values(a):
    """All singular values of the last two axes, descending, in float64."""
    return np.linalg.svd(_f64(a), compute_uv=False)


def optimal_errors(a, rank):
    """Eckart–Young optimum for one matrix: (Frobenius tail, spectral sigma_{r+1})."""
    s = singular_values(a)
    tail = s[rank:]
    frobenius = float(np.sqrt(np.sum(tail**2)))
    spectral = float(tail[0]) if tail.size else 0.0
    return frobenius, spectral


def best_rank_approx(a, rank):
    """M_r = sum_{i < r} sigma_i u_i v_i^H, one outer product at a time (Eckart–Young)."""
    U, s, Vh = np.linalg.svd(_f64(a), full_matrices=False)
    out = np.zeros(U.shape[:1] + Vh.shape[1:], dtype=U.dtype)
    for i in range(rank):
        out += s[i] * np.outer(U[:, i], Vh[i, :])
    return out


def pinv_svd(a, rtol=None):
    """A^dagger = V Sigma^dagger U^H, inverting singular values one by one."""
    a = _f64(a)
    U, s, Vh = np.linalg.svd(a, full_matrices=False)
    if rtol is None:
        rtol = max(a.shape) * np.finfo(np.float64).eps
    cutoff = rtol * (s[0] if s.size else 0.0)
    out = np.zeros((a.shape[1], a.shape[0]), dtype=a.dtype)
    for i, sigma in enumerate(s):
        if sigma > cutoff:
            out += np.outer(Vh[i, :].conj(), U[:, i].conj()) / sigma
    return out


def pinv_eig(a, rtol=None):
    """A^dagger = W Lambda^dagger W^T A^T from the eigendecomposition of A^T A."""
    a = _f64(a)
    lam, W = np.linalg.eigh(a.conj().T @ a)
    if rtol is None:
        rtol = max(a.shape) * np.finfo(np.float64).eps
    # Rounding in A^T A leaves "zero" eigenvalues of size ~eps * lambda_max (the squared
    # condition number of A), so the cutoff is relative to lambda_max itself.
    cutoff = rtol * max(lam.max(initial=0.0), 0.0)
    lam_inv = np.array([1.0 / x if x > cutoff else 0.0 for x in lam])
    return W @ np.diag(lam_inv) @ W.conj().T @ a.conj().T


def pinv_ridge(a, eps):
    """(A^T A + eps I)^{-1} A^T, whose eps -> 0+ limit is A^dagger."""
    a = _f64(a)
    r = a.shape[1]
    return np.linalg.solve(a.conj().T @ a + eps * np.eye(r), a.conj().T)


def pinv_full_column_rank(a):
    """(A^T A)^{-1} A^T for full column rank."""
    a = _f64(a)
    return np.linalg.solve(a.conj().T @ a, a.conj().T)


def pinv_full_row_rank(b):
    """B^T (B B^T)^{-1} for full row rank."""
    b = _f64(b)
    return np.linalg.solve(b @ b.conj().T, b).conj().T


def frobenius_loss(a, b, m):
    """||A B - M||_F in float64."""
    return float(np.linalg.norm(_f64(a) @ _f64(b) - _f64(m)))


def rank_deficient(m, n, rank, *, seed=0, high=3):
    """m x n float64 matrix of exact rank ``rank`` with small integer entries.

    Integer factors make the product exactly representable in float32 and float64, so
    the zero singular values are zero up to the SVD's own rounding in any dtype.
    """
    rng = np.random.default_rng(seed)
    while True:
        x = rng.integers(-high, high + 1, size=(m, rank))
        y = rng.integers(-high, high + 1, size=(rank, n))
        a = (x @ y).astype(np.float64)
        if np.linalg.matrix_rank(a) == rank:
            return a


def svd_via_eig(a):
    """SVD by construction: eigh of MᵀM, Σ = Λ^{1/2}, U = M V Σ⁻¹ on the nonzero part."""
    a = _f64(a)
    lam, V = np.linalg.eigh(a.conj().T @ a)
    order = np.argsort(lam)[::-1]
    lam, V = lam[order], V[:, order]
    k = int(np.sum(lam > max(a.shape) * np.finfo(np.float64).eps * max(lam.max(initial=0), 0)))
    s = np.sqrt(lam[:k])
    U = a @ V[:, :k] / s
    return U, s, V[:, :k].conj().T
