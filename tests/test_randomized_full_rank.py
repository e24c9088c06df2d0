"""randomized_svd at rank min(m, n) and min(m, n) - 1: as accurate as a dense SVD.

A Krylov basis that fills all of min(m, n) has to span range(a) exactly; built block by
block it does so only up to the cancellation in each projected block, and the small
Rayleigh-Ritz factorisation has to keep singular values far below sqrt(eps)·σ_1. The
invariants checked are those a backward-stable SVD meets: residuals
``‖a v_j − σ_j u_j‖`` and ``‖aᴴ u_j − σ_j v_j‖`` of order eps·‖a‖₂ (times a size factor
for the rounding of ``max(m, n)``-long inner products), orthonormal factors and the
exact singular values.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import eps, matrix_with_spectrum, to_numpy

import lowrank

SHAPES = [(300, 100), (100, 300)]
# Size factor of the bounds: c · eps · sqrt(max(m, n)), as for any backward-stable SVD
# (LAPACK itself reaches 5-7 eps·sqrt(max(m, n)) on these matrices).
C = 50.0


def _matrix(kind, shape, seed):
    m, n = shape
    if kind == "gaussian":
        return np.random.default_rng(seed).standard_normal(shape)
    # geometric 0.7^i: sigma_min ~ 1e-9 sigma_1, far below sqrt(eps) of float64
    return matrix_with_spectrum(m, n, 0.7 ** np.arange(min(m, n)), seed=seed)


def _residual(a, U, S, Vh):
    """Largest Ritz residual of the triplets, over both sides, relative to ‖a‖₂."""
    right = np.linalg.norm(a @ Vh.conj().T - U * S, axis=0)
    left = np.linalg.norm(a.conj().T @ U - Vh.conj().T * S, axis=0)
    return max(right.max(), left.max()) / np.linalg.norm(a, 2)


def _check(a, res, rank, dtype_eps):
    U, S, Vh = (np.asarray(to_numpy(x), dtype=np.float64) for x in res[:3])
    tol = C * dtype_eps * np.sqrt(max(a.shape))
    assert U.shape == (a.shape[0], rank) and Vh.shape == (rank, a.shape[1])
    assert _residual(a, U, S, Vh) <= tol
    assert np.abs(U.T @ U - np.eye(rank)).max() <= tol
    assert np.abs(Vh @ Vh.T - np.eye(rank)).max() <= tol
    s = np.linalg.svd(a, compute_uv=False)
    assert np.max(np.abs(S - s[:rank])) <= tol * s[0]


@pytest.mark.parametrize("kind", ["gaussian", "geometric"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("drop", [0, 1], ids=["min", "min-1"])
def test_full_rank_is_backward_stable(xp, dtype, asarray, kind, shape, drop):
    rank = min(shape) - drop
    for seed in range(2):
        # the data is rounded to the working dtype first: that is the matrix factorised
        a = np.asarray(to_numpy(asarray(_matrix(kind, shape, seed), dtype=dtype)),
                       dtype=np.float64)
        res = lowrank.randomized_svd(asarray(a, dtype=dtype), rank, rng=seed)
        _check(a, res, rank, eps(dtype))


@pytest.mark.parametrize("method", ["block_krylov", "subspace"])
def test_full_rank_sparse_and_operator(method):
    sparse = pytest.importorskip("scipy.sparse")
    splinalg = pytest.importorskip("scipy.sparse.linalg")
    a = sparse.random(300, 100, density=0.2, random_state=0, format="csr")
    dense = a.toarray()
    for inp in (a, splinalg.aslinearoperator(a)):
        res = lowrank.randomized_svd(inp, 100, method=method, rng=0)
        _check(dense, res, 100, eps("float64"))


def test_tol_path_reaching_full_width_stays_honest():
    a = _matrix("geometric", (300, 100), 0)
    res = lowrank.randomized_svd(a, 100, tol=1e-300, rng=0)
    _check(a, res, 100, eps("float64"))
    # the estimate is the residual of the returned triplets (rounding only)
    true = _residual(a, *(np.asarray(x) for x in res))
    assert res.error_estimate <= C * eps("float64") * np.sqrt(300)
    assert abs(res.error_estimate - true) <= C * eps("float64") * np.sqrt(300)


def test_full_width_plan_reads_a_once():
    a = _matrix("gaussian", (300, 100), 0)
    res = lowrank.randomized_svd(a, 95, rng=0)  # 6 blocks of 58 columns >= 100
    assert res.passes == 1
    assert lowrank.svd_approx(a, rank=95, rng=0).passes == 1 + 1  # + ‖a‖_F
    # 6 blocks of 15 columns < 100: the Krylov route, one read per AᴴA product
    assert lowrank.randomized_svd(a, 10, rng=0).passes == 5 + 4
