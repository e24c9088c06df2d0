"""randomized_svd and randomized_range_finder: invariants on matrices with known spectra."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import backend_name, eps, matrix_with_spectrum, same_namespace, to_numpy
from hypothesis import given
from hypothesis import strategies as st

import lowrank

M, N, RANK = 150, 100, 3
SPECTRA = {"fast": 0.8 ** np.arange(N), "slow": (1.0 + np.arange(N)) ** -0.5}
# Stated factors over the Eckart–Young optimum sqrt(Σ_{i>k} σ_i²) at the default settings;
# measured ratios are <= 1.0001 (fast) and <= 1.03 (slow) for both methods here.
FACTOR = {"fast": 1.01, "slow": 1.10}


def optimal_error(s, rank):
    return float(np.sqrt(np.sum(np.asarray(s)[rank:] ** 2)))


def check_factors(U, S, Vh, rank, dtype_name, shape):
    m, n = shape[-2:]
    U, S, Vh = to_numpy(U), to_numpy(S), to_numpy(Vh)
    assert U.shape == (*shape[:-2], m, rank)
    assert Vh.shape == (*shape[:-2], rank, n)
    tol = 50 * eps(dtype_name)
    eye = np.eye(rank)
    assert np.allclose(np.swapaxes(U, -1, -2).conj() @ U, eye, atol=tol)
    assert np.allclose(Vh @ np.swapaxes(Vh, -1, -2).conj(), eye, atol=tol)
    assert np.all(np.diff(S, axis=-1) <= tol * np.max(S, initial=0))


@pytest.mark.parametrize("spectrum", ["fast", "slow"])
@pytest.mark.parametrize("method", ["block_krylov", "subspace"])
def test_error_within_factor_of_optimum(xp, dtype, asarray, spectrum, method):
    s = SPECTRA[spectrum]
    a = asarray(matrix_with_spectrum(M, N, s, seed=1), dtype=dtype)
    U, S, Vh = lowrank.randomized_svd(a, RANK, method=method, rng=0)
    assert same_namespace(xp, U)
    assert U.dtype == dtype
    assert S.dtype == dtype
    name = "float32" if dtype == xp.float32 else "float64"
    check_factors(U, S, Vh, RANK, name, (M, N))
    err = np.linalg.norm(to_numpy(a).astype(float) - (to_numpy(U) * to_numpy(S)) @ to_numpy(Vh))
    opt = optimal_error(s, RANK)
    assert opt * (1 - 1e-3) <= err <= FACTOR[spectrum] * opt
    # Ritz values interlace: never above the true singular values
    assert np.all(to_numpy(S) <= s[:RANK] * (1 + 100 * eps(name)))


def test_wide_input_and_signs(xp, asarray):
    s = SPECTRA["fast"]
    a = asarray(matrix_with_spectrum(N, M, s, seed=2))  # wide: 200 x 300
    U, S, Vh = lowrank.randomized_svd(a, RANK, rng=3)
    check_factors(U, S, Vh, RANK, "float64", (N, M))
    U = to_numpy(U)
    # svd_flip rule: the largest-magnitude entry of each column of U is positive
    assert np.all(U[np.argmax(np.abs(U), axis=0), np.arange(RANK)] > 0)
    err = np.linalg.norm(to_numpy(a) - (U * to_numpy(S)) @ to_numpy(Vh))
    assert err <= FACTOR["fast"] * optimal_error(s, RANK)


def test_same_seed_same_result_and_input_untouched(xp, asarray):
    a = asarray(matrix_with_spectrum(80, 60, SPECTRA["slow"][:60], seed=4))
    before = to_numpy(a).copy()
    r1 = lowrank.randomized_svd(a, 6, rng=11)
    r2 = lowrank.randomized_svd(a, 6, rng=11)
    r3 = lowrank.randomized_svd(a, 6, method="subspace", n_power_iter=0, rng=12)
    r4 = lowrank.randomized_svd(a, 6, method="subspace", n_power_iter=0, rng=13)
    for x, y in zip(r1, r2, strict=False):
        assert np.array_equal(to_numpy(x), to_numpy(y))
    assert not np.allclose(to_numpy(r3.S), to_numpy(r4.S), rtol=0, atol=1e-12)
    assert np.array_equal(to_numpy(a), before)


def test_batched_equals_per_matrix(xp, asarray):
    rng = np.random.default_rng(5)
    stack = rng.standard_normal((3, 40, 4)) @ rng.standard_normal((3, 4, 30))
    a = asarray(stack)
    U, S, Vh = lowrank.randomized_svd(a, 4, rng=0)
    check_factors(U, S, Vh, 4, "float64", stack.shape)
    rec = to_numpy(U) * to_numpy(S)[..., None, :] @ to_numpy(Vh)
    for i in range(3):
        Ui, Si, Vhi = lowrank.randomized_svd(a[i, ...], 4, rng=0)
        single = (to_numpy(Ui) * to_numpy(Si)) @ to_numpy(Vhi)
        assert np.allclose(rec[i], single, atol=1e-10 * np.abs(stack[i]).max())
        assert np.allclose(to_numpy(S)[i], to_numpy(Si), rtol=1e-10)


def test_dtype_promotion(xp, asarray):
    ints = np.arange(12 * 9).reshape(12, 9) % 7
    U, S, Vh = lowrank.randomized_svd(asarray(ints, dtype=xp.int64), 3, rng=0)
    assert U.dtype == xp.float64
    assert S.dtype == xp.float64
    if backend_name(xp) != "array_api_strict":  # no float16 there
        half = asarray(ints.astype(np.float16), dtype=xp.float16)
        U, S, Vh = lowrank.randomized_svd(half, 3, rng=0)
        assert U.dtype == xp.float16
        assert Vh.dtype == xp.float16


def test_rank_zero_and_empty(xp, asarray):
    a = asarray(np.ones((7, 5)))
    U, S, Vh = lowrank.randomized_svd(a, 0)
    assert U.shape == (7, 0)
    assert S.shape == (0,)
    assert Vh.shape == (0, 5)
    U, S, Vh = lowrank.randomized_svd(asarray(np.ones((0, 5))), 0)
    assert U.shape == (0, 0)
    assert Vh.shape == (0, 5)
    assert lowrank.randomized_range_finder(a, 0).shape == (7, 0)


def test_full_rank_request_is_exact(xp, asarray):
    a = np.random.default_rng(6).standard_normal((9, 6))
    U, S, Vh = lowrank.randomized_svd(asarray(a), 6, rng=0)
    assert np.allclose((to_numpy(U) * to_numpy(S)) @ to_numpy(Vh), a, atol=1e-12)
    assert np.allclose(to_numpy(S), np.linalg.svd(a, compute_uv=False), rtol=1e-12)


def test_complex_input():
    a = matrix_with_spectrum(50, 40, 0.5 ** np.arange(40), seed=7, complex_=True)
    U, S, Vh = lowrank.randomized_svd(a, 8, rng=0)
    assert U.dtype == np.complex128
    assert S.dtype == np.float64
    check_factors(U, S, Vh, 8, "float64", a.shape)
    err = np.linalg.norm(a - (U * S) @ Vh)
    assert err <= 1.01 * optimal_error(0.5 ** np.arange(40), 8)


def test_sparse_and_linear_operator_inputs():
    sp = pytest.importorskip("scipy.sparse")
    from scipy.sparse.linalg import aslinearoperator

    dense = matrix_with_spectrum(120, 70, 0.7 ** np.arange(70), seed=8)
    dense[np.abs(dense) < 0.02] = 0.0  # genuinely sparse storage, same matrix
    ref = lowrank.randomized_svd(dense, 6, rng=0)
    for a in (sp.csr_matrix(dense), sp.csc_array(dense.T).T, aslinearoperator(dense)):
        U, S, Vh = lowrank.randomized_svd(a, 6, rng=0)
        assert isinstance(U, np.ndarray)
        assert U.dtype == np.float64
        assert np.allclose(S, ref.S, rtol=1e-10)
        assert np.allclose((U * S) @ Vh, (ref.U * ref.S) @ ref.Vh, atol=1e-10)
    wide = lowrank.randomized_svd(sp.csr_matrix(dense.T), 6, rng=0)
    assert np.allclose(wide.S, ref.S, rtol=1e-6)


def test_range_finder(xp, asarray):
    rng = np.random.default_rng(9)
    a = asarray(rng.standard_normal((60, 5)) @ rng.standard_normal((5, 40)))
    Q = lowrank.randomized_range_finder(a, 7, rng=0)
    assert Q.shape == (60, 7)
    assert same_namespace(xp, Q)
    Qn, an = to_numpy(Q), to_numpy(a)
    assert np.allclose(Qn.T @ Qn, np.eye(7), atol=1e-12)
    assert np.allclose(Qn @ (Qn.T @ an), an, atol=1e-10 * np.abs(an).max())
    wide = lowrank.randomized_range_finder(asarray(to_numpy(a).T), 5, n_power_iter=1, rng=0)
    assert wide.shape == (40, 5)


def test_bad_inputs(xp, asarray):
    a = asarray(np.ones((6, 4)))
    with pytest.raises(ValueError, match="`a` must have ndim"):
        lowrank.randomized_svd(asarray(np.ones(4)), 1)
    with pytest.raises(ValueError, match=r"`rank`.*got 5"):
        lowrank.randomized_svd(a, 5)
    with pytest.raises(ValueError, match=r"`rank`.*got -1"):
        lowrank.randomized_svd(a, -1)
    with pytest.raises(TypeError, match="`rank` must be an integer"):
        lowrank.randomized_svd(a, 1.5)
    with pytest.raises(ValueError, match="`method`"):
        lowrank.randomized_svd(a, 1, method="lanczos")
    with pytest.raises(ValueError, match="`n_oversamples`"):
        lowrank.randomized_svd(a, 1, n_oversamples=-1)
    with pytest.raises(ValueError, match="`n_power_iter`"):
        lowrank.randomized_svd(a, 1, n_power_iter=-2)
    with pytest.raises(ValueError, match="`size`"):
        lowrank.randomized_range_finder(a, 7)
    with pytest.raises(ValueError, match=r"`block_size`.*got 0"):
        lowrank.randomized_svd(a, 1, block_size=0)
    with pytest.raises(TypeError, match="`block_size` must be an integer"):
        lowrank.randomized_svd(a, 1, block_size=2.5)
    bad = np.ones((6, 4))
    for value in (np.nan, np.inf):
        bad[2, 1] = value
        with pytest.raises(ValueError, match="NaN or Inf"):
            lowrank.randomized_svd(asarray(bad), 1)


@pytest.mark.parametrize("block_size", [3, 8])
def test_block_size_is_honoured(block_size):
    """Explicit blocks give a near-optimal rank-6 approximation and are really used."""
    s = 1.0 / np.arange(1, 61)
    a = matrix_with_spectrum(120, 80, s, seed=3)
    U, S, Vh = lowrank.randomized_svd(a, 6, method="block_krylov", block_size=block_size, rng=0)
    opt = np.sqrt(np.sum(s[6:] ** 2))
    assert np.linalg.norm(a - (U * S) @ Vh) <= 1.05 * opt
    np.testing.assert_allclose(U.T @ U, np.eye(6), atol=1e-12)
    # the block really is used: at one extension (not converged) the default block
    # (ceil(6 / 2) + 10 = 13 columns) gives other Ritz values
    short = lowrank.randomized_svd(a, 6, block_size=block_size, n_power_iter=1, rng=0)
    default = lowrank.randomized_svd(a, 6, method="block_krylov", n_power_iter=1, rng=0)
    assert np.max(np.abs(short.S - default.S)) > 1e-10


def test_mixed_namespace_rejected(xp, asarray):
    import array_api_compat.numpy as np_ns
    import array_api_strict

    a = asarray(np.ones((5, 4)))
    other = array_api_strict if backend_name(xp) == "numpy" else np_ns
    with pytest.raises(TypeError, match="namespace"):
        lowrank.randomized_svd(a, 1, xp=other)


@given(m=st.integers(1, 25), n=st.integers(1, 25), data=st.data())
def test_property_shapes_and_bounds(m, n, data):
    rank = data.draw(st.integers(0, min(m, n)))
    method = data.draw(st.sampled_from(["block_krylov", "subspace"]))
    a = np.random.default_rng(m * 31 + n).standard_normal((m, n))
    U, S, Vh = lowrank.randomized_svd(a, rank, method=method, rng=0)
    check_factors(U, S, Vh, rank, "float64", (m, n))
    s = np.linalg.svd(a, compute_uv=False)
    err = np.linalg.norm(a - (U * S) @ Vh)
    opt = optimal_error(s, rank)
    assert err >= opt * (1 - 1e-10) - 1e-12  # Eckart–Young: nothing beats the optimum
    assert err <= np.linalg.norm(a) * (1 + 1e-12)
    assert np.all(s[:rank] * (1 + 1e-10) + 1e-12 >= S)


def test_rank_deficient_operator_keeps_orthonormal_factors(xp, dtype, asarray):
    # rank 3, but 6 blocks of 4: every block after the first is projected round-off,
    # which "twice is enough" Gram-Schmidt leaves far from orthogonal to the basis
    rng = np.random.default_rng(3)
    a = rng.standard_normal((300, 3)) @ rng.standard_normal((3, 200))
    U, S, Vh = lowrank.randomized_svd(
        asarray(a, dtype=dtype), 10, method="block_krylov", block_size=4, n_power_iter=5, rng=0
    )
    U, S, Vh = to_numpy(U), to_numpy(S), to_numpy(Vh)
    tol = 50 * eps(dtype)
    np.testing.assert_allclose(U.T @ U, np.eye(10), atol=tol)
    np.testing.assert_allclose(Vh @ Vh.T, np.eye(10), atol=tol)
    np.testing.assert_allclose((U * S) @ Vh, a, atol=tol * np.linalg.norm(a, 2) * 10)


@pytest.mark.parametrize(("block_size", "n_power_iter"), [(None, 0), (3, 2)])
def test_too_few_krylov_columns_widen_the_block(block_size, n_power_iter):
    # rank 100 from one block of ceil(100 / 2) + 10 = 60 columns, or 3 blocks of 3
    a = np.random.default_rng(3).standard_normal((300, 200))
    U, S, Vh = lowrank.randomized_svd(a, 100, method="block_krylov", block_size=block_size,
                                      n_power_iter=n_power_iter, rng=0)
    check_factors(U, S, Vh, 100, "float64", a.shape)
    s = np.linalg.svd(a, compute_uv=False)
    assert np.all(s[:100] * (1 + 1e-10) >= S)
