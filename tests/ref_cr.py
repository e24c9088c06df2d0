"""Naive float64 NumPy oracles for CR sampling: brute force and exact enumeration."""

from __future__ import annotations

import itertools

import numpy as np


def cr_error2(X, Y, idx, lam=None):
    """‖Σ_j λ_j x_{s_j} y_{s_j}ᵀ − XY‖_F² by explicit outer products."""
    M = np.zeros((X.shape[0], Y.shape[1]))
    for j, i in enumerate(idx):
        M += (1.0 if lam is None else lam[j]) * np.outer(X[:, i], Y[i, :])
    return float(np.sum((M - X @ Y) ** 2))


def brute_force_best(X, Y, r):
    """(best error, list of optimal kept sets) over all r-subsets."""
    errs = {S: cr_error2(X, Y, S) for S in itertools.combinations(range(X.shape[1]), r)}
    best = min(errs.values())
    return best, [S for S, e in errs.items() if e <= best * (1 + 1e-12) + 1e-12]


def iid_sequences(p, r):
    """Every index sequence of r i.i.d. draws from p, with its probability."""
    for seq in itertools.product(range(len(p)), repeat=r):
        prob = float(np.prod([p[i] for i in seq]))
        if prob > 0:
            yield seq, prob


def expected_error_formula(X, Y, p, r):
    """(1/r)(Σ ‖x_i‖²‖y_i‖²/p_i − ‖XY‖_F²) with 0/0 = 0, by loops."""
    total = 0.0
    for i in range(X.shape[1]):
        v = np.linalg.norm(X[:, i]) ** 2 * np.linalg.norm(Y[i, :]) ** 2
        if v > 0:
            total += v / p[i]
    return (total - np.linalg.norm(X @ Y) ** 2) / r


def diagonal_lstsq(X, Y, idx):
    """Optimal diagonal λ* from the vectorised least-squares problem (mn-dimensional)."""
    U = np.stack([np.outer(X[:, i], Y[i, :]).ravel() for i in idx], axis=1)
    lam, *_ = np.linalg.lstsq(U, (X @ Y).ravel(), rcond=None)
    return lam


def systematic_intervals(cum):
    """Sub-intervals of [0, 1) on which systematic sampling's choice is constant."""
    cuts = sorted({0.0, 1.0, *(float(c) % 1.0 for c in cum)})
    return [(lo, hi) for lo, hi in itertools.pairwise(cuts) if hi - lo > 1e-14]


def inclusion_probabilities(p, r):
    """π_i = min(1, c p_i) with Σπ = r, by the textbook fixed-point iteration."""
    p = np.asarray(p, dtype=float)
    capped = np.zeros(len(p), dtype=bool)
    while True:
        c = (r - capped.sum()) / p[~capped].sum()
        new = capped | (c * p >= 1)
        if (new == capped).all():
            return np.where(capped, 1.0, c * p)
        capped = new
