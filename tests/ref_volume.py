"""Oracles for Gram volumes and column selection (tests only).

- ``mp_log_volume``: high-precision reference (mpmath, 60 digits) from the exact input
  values; the Gram route is harmless at that precision.
- ``det_volume``: the naive float64 ``sqrt(det(aᴴa))`` (fine for well-conditioned input).
- ``cauchy_binet_volume``: sqrt of the sum of squared maximal minors (Cauchy–Binet).
- ``subset_volumes``: volume of every k-column subset (brute force, small m).
"""

from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np


def mp_log_volume(a: np.ndarray, dps: int = 60) -> float:
    """log sqrt(det(aᴴa)) of one n×k matrix, evaluated with ``dps`` decimal digits."""
    a = np.asarray(a)
    n, k = a.shape
    if k == 0:
        return 0.0
    if n < k:
        return -math.inf
    with mpmath.workdps(dps):
        m = mpmath.matrix(n, k)
        for i in range(n):
            for j in range(k):
                z = complex(a[i, j])
                m[i, j] = mpmath.mpc(z.real, z.imag) if np.iscomplexobj(a) else mpmath.mpf(z.real)
        gram = m.H * m if np.iscomplexobj(a) else m.T * m
        det = mpmath.re(mpmath.det(gram))
        return -math.inf if det <= 0 else float(mpmath.log(det) / 2)


def det_volume(a: np.ndarray) -> np.ndarray:
    """Naive batched float64 sqrt(det(aᴴa)) (squares the condition number)."""
    a = np.asarray(a)
    gram = np.swapaxes(a.conj(), -1, -2) @ a
    return np.sqrt(np.maximum(np.linalg.det(gram).real, 0.0))


def cauchy_binet_volume(a: np.ndarray) -> float:
    """sqrt(sum over k-row subsets S of |det a[S, :]|²); 0 when n < k."""
    n, k = a.shape
    subsets = itertools.combinations(range(n), k)
    total = sum(abs(np.linalg.det(a[list(rows), :])) ** 2 for rows in subsets)
    return math.sqrt(total) if k else 1.0


def subset_volumes(a: np.ndarray, k: int) -> dict[tuple[int, ...], float]:
    """Gram volume of a[:, S] for every sorted k-subset S of the columns."""
    return {
        cols: float(np.prod(np.abs(np.diag(np.linalg.qr(a[:, list(cols)], mode="r")))))
        for cols in itertools.combinations(range(a.shape[1]), k)
    }


def random_orthonormal(n: int, k: int, seed: int) -> np.ndarray:
    """n×k matrix with orthonormal columns (QR of a Gaussian matrix)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, k)))
    return q
