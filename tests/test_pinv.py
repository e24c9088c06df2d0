"""pinv and optimal_factor: Moore–Penrose conditions, ridge limit, least squares."""

from __future__ import annotations

import itertools

import helpers
import numpy as np
import pytest
import reference
from hypothesis import given
from hypothesis import strategies as st

import lowrank


def _eps(dtype):
    """Machine epsilon of a dtype given by name, NumPy scalar type or backend dtype."""
    return float(np.finfo(_np_dtype(dtype)).eps)


def _np_dtype(dtype):
    return np.dtype(getattr(dtype, "__name__", None) or str(dtype).rsplit(".", 1)[-1])


def _close(x, y, dtype, scale=1.0):
    """Elementwise agreement within a few hundred ulps of the working dtype."""
    return np.allclose(
        helpers.to_numpy(x), helpers.to_numpy(y), rtol=0, atol=400 * _eps(dtype) * scale
    )


@pytest.mark.parametrize(("m", "n", "rank"), [(8, 6, 2), (5, 9, 3), (6, 6, 5), (7, 4, 4)])
def test_moore_penrose_identities_on_rank_deficient(xp, dtype, asarray, m, n, rank):
    host = reference.rank_deficient(m, n, rank, seed=m * n)
    p = helpers.to_numpy(lowrank.pinv(asarray(host, dtype=dtype))).astype(np.float64)
    scale = np.abs(host).max() * np.abs(p).max() * max(m, n)
    assert _close(host @ p @ host, host, dtype, scale * np.abs(host).max())
    assert _close(p @ host @ p, p, dtype, scale * np.abs(p).max())
    assert _close(host @ p, (host @ p).T, dtype, scale)
    assert _close(p @ host, (p @ host).T, dtype, scale)
    assert _close(p, reference.pinv_svd(host), dtype, scale * np.abs(p).max())


def test_result_keeps_namespace_dtype_device_and_input(xp, dtype, asarray):
    host = reference.rank_deficient(6, 4, 2)
    a = asarray(host, dtype=dtype)
    p = lowrank.pinv(a)
    assert helpers.same_namespace(xp, p)
    assert p.dtype == dtype
    assert p.shape == (4, 6)
    assert lowrank._lib._compat.device(p) == lowrank._lib._compat.device(a)
    assert np.array_equal(helpers.to_numpy(a), host)


def test_ridge_limit():
    host = reference.rank_deficient(6, 3, 2, seed=1)
    p = lowrank.pinv(host)
    # (Below ~1e-8 the ridge solve itself loses accuracy: it squares the condition number.)
    errors = [np.abs(reference.pinv_ridge(host, e) - p).max() for e in (1e-2, 1e-4, 1e-6)]
    for bigger, smaller in itertools.pairwise(errors):
        assert 30 < bigger / smaller < 300  # the error falls in proportion to eps


def test_eigen_route_equals_svd_route():
    host = reference.rank_deficient(9, 5, 3, seed=2)
    assert np.allclose(lowrank.pinv(host), reference.pinv_eig(host), atol=1e-10)


def test_full_rank_closed_forms():
    rng = np.random.default_rng(3)
    tall, wide, square = (
        rng.standard_normal((8, 3)),
        rng.standard_normal((3, 8)),
        rng.standard_normal((5, 5)),
    )
    assert np.allclose(lowrank.pinv(tall), reference.pinv_full_column_rank(tall), atol=1e-12)
    assert np.allclose(lowrank.pinv(wide), reference.pinv_full_row_rank(wide), atol=1e-12)
    assert np.allclose(lowrank.pinv(square), np.linalg.inv(square), atol=1e-10)


def test_further_moore_penrose_properties(xp, asarray):
    rng = np.random.default_rng(4)
    host = reference.rank_deficient(7, 5, 3, seed=4)
    a = asarray(host)
    p = helpers.to_numpy(lowrank.pinv(a))
    assert np.allclose(helpers.to_numpy(lowrank.pinv(asarray(p))), host, atol=1e-10)  # (A^+)^+ = A
    assert np.allclose(helpers.to_numpy(lowrank.pinv(asarray(host.T))), p.T, atol=1e-12)
    assert np.allclose(helpers.to_numpy(lowrank.pinv(asarray(-2.5 * host))), p / -2.5, atol=1e-12)
    q1 = np.linalg.qr(rng.standard_normal((7, 7)))[0]
    q2 = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    rotated = helpers.to_numpy(lowrank.pinv(asarray(q1 @ host @ q2)))
    assert np.allclose(rotated, q2.T @ p @ q1.T, atol=1e-12)
    orth = np.linalg.qr(rng.standard_normal((7, 3)))[0]
    assert np.allclose(helpers.to_numpy(lowrank.pinv(asarray(orth))), orth.T, atol=1e-12)


def test_zero_singular_and_empty(xp, asarray):
    assert np.array_equal(
        helpers.to_numpy(lowrank.pinv(asarray(np.zeros((4, 3))))), np.zeros((3, 4))
    )
    singular = np.array([[1.0, 2.0], [2.0, 4.0]])
    assert np.allclose(helpers.to_numpy(lowrank.pinv(asarray(singular))), singular.T / 25.0)
    assert lowrank.pinv(asarray(np.zeros((0, 3)))).shape == (3, 0)
    assert lowrank.pinv(asarray(np.zeros((2, 3, 0)))).shape == (2, 0, 3)


def test_batched_and_rtol(xp, asarray):
    host = np.stack([reference.rank_deficient(5, 4, r, seed=r) for r in (1, 2, 3)])
    p = helpers.to_numpy(lowrank.pinv(asarray(host)))
    for k in range(3):
        assert np.allclose(p[k], reference.pinv_svd(host[k]), atol=1e-12)
    # A cutoff above sigma_2/sigma_1 keeps only the leading triplet.
    near = helpers.matrix_with_spectrum(5, 4, [1.0, 1e-3, 1e-6, 1e-9], seed=5)
    kept = helpers.to_numpy(lowrank.pinv(asarray(near), rtol=1e-2))
    assert np.allclose(kept, reference.pinv_svd(near, rtol=1e-2), atol=1e-9)
    assert np.linalg.matrix_rank(kept, tol=1e-6) == 1
    assert np.allclose(
        helpers.to_numpy(lowrank.pinv(asarray(near), rtol=0.0)),
        np.linalg.pinv(near, rcond=0),
        rtol=1e-6,
    )


def test_integer_input_promotes_to_float64(xp):
    assert lowrank.pinv(xp.asarray(np.array([[1, 2], [3, 4], [5, 6]]))).dtype == xp.float64


@pytest.mark.parametrize("rtol", [-1e-3, float("nan"), float("inf")])
def test_bad_rtol(rtol):
    with pytest.raises(ValueError, match="`rtol` must be finite and >= 0"):
        lowrank.pinv(np.eye(3), rtol=rtol)


def test_bad_pinv_input(xp, asarray):
    with pytest.raises(ValueError, match="`a` must have ndim >= 2"):
        lowrank.pinv(asarray(np.ones(3)))
    with pytest.raises(ValueError, match="`a` contains NaN or Inf"):
        lowrank.pinv(asarray(np.array([[1.0, np.nan]])))


# --- optimal_factor (min ‖AB − M‖_F) ----------------------------------------------------------


@pytest.mark.parametrize("rank", [3, 2])  # full column rank, then rank-deficient A
def test_right_factor_is_least_squares_optimal(xp, dtype, asarray, rank):
    rng = np.random.default_rng(6)
    A = reference.rank_deficient(10, 3, rank, seed=rank)
    M = rng.standard_normal((10, 4))
    B = helpers.to_numpy(lowrank.optimal_factor(asarray(A, dtype=dtype), asarray(M, dtype=dtype)))
    assert B.shape == (3, 4)
    assert B.dtype == _np_dtype(dtype)
    expected = np.linalg.lstsq(A, M, rcond=None)[0]  # also the minimum-norm minimiser
    assert _close(B, expected, dtype, np.abs(expected).max() * 10)
    loss = reference.frobenius_loss(A, B, M)
    for _ in range(50):
        assert reference.frobenius_loss(A, B + 1e-3 * rng.standard_normal(B.shape), M) >= loss * (
            1 - 1e-6
        )


@pytest.mark.parametrize("rank", [3, 1])
def test_left_factor_is_least_squares_optimal(xp, asarray, rank):
    rng = np.random.default_rng(7)
    B = reference.rank_deficient(3, 9, rank, seed=rank)
    M = rng.standard_normal((5, 9))
    A = helpers.to_numpy(lowrank.optimal_factor(asarray(B), asarray(M), side="left"))
    assert A.shape == (5, 3)
    assert np.allclose(A, M @ reference.pinv_svd(B), atol=1e-12)
    assert np.allclose(A, np.linalg.lstsq(B.T, M.T, rcond=None)[0].T, atol=1e-10)
    assert np.allclose(A @ B, M @ reference.pinv_svd(B) @ B, atol=1e-10)  # projection onto row(B)
    loss = reference.frobenius_loss(A, B, M)
    for _ in range(50):
        assert reference.frobenius_loss(A + 1e-3 * rng.standard_normal(A.shape), B, M) >= loss * (
            1 - 1e-9
        )


def test_full_rank_closed_forms_for_factors():
    rng = np.random.default_rng(8)
    A, B, M = rng.standard_normal((9, 3)), rng.standard_normal((3, 7)), rng.standard_normal((9, 7))
    assert np.allclose(lowrank.optimal_factor(A, M), np.linalg.solve(A.T @ A, A.T @ M), atol=1e-12)
    assert np.allclose(
        lowrank.optimal_factor(B, M, side="left"), M @ B.T @ np.linalg.inv(B @ B.T), atol=1e-12
    )


def test_factor_batched_broadcast_and_dtypes(xp, asarray):
    rng = np.random.default_rng(9)
    A, M = rng.standard_normal((2, 1, 6, 3)), rng.standard_normal((4, 6, 2))
    B = helpers.to_numpy(lowrank.optimal_factor(asarray(A), asarray(M)))
    assert B.shape == (2, 4, 3, 2)
    assert np.allclose(B[1, 3], np.linalg.lstsq(A[1, 0], M[3], rcond=None)[0], atol=1e-12)
    mixed = lowrank.optimal_factor(asarray(A[0, 0], dtype=xp.float32), asarray(M[0]))
    assert mixed.dtype == xp.float64
    ints = lowrank.optimal_factor(
        xp.asarray(np.array([[1, 0], [0, 1], [1, 1]])), xp.asarray(np.ones((3, 2)))
    )
    assert ints.dtype == xp.float64


def test_factor_inputs_not_mutated(xp, asarray):
    A, M = reference.rank_deficient(5, 3, 2), np.arange(10.0).reshape(5, 2)
    a, m = asarray(A), asarray(M)
    lowrank.optimal_factor(a, m)
    assert np.array_equal(helpers.to_numpy(a), A)
    assert np.array_equal(helpers.to_numpy(m), M)


def test_factor_empty_and_zero(xp, asarray):
    assert lowrank.optimal_factor(asarray(np.ones((0, 3))), asarray(np.ones((0, 2)))).shape == (
        3,
        2,
    )
    assert lowrank.optimal_factor(asarray(np.ones((4, 0))), asarray(np.ones((4, 2)))).shape == (
        0,
        2,
    )
    zero = lowrank.optimal_factor(asarray(np.zeros((4, 3))), asarray(np.ones((4, 2))))
    assert np.array_equal(helpers.to_numpy(zero), np.zeros((3, 2)))


def test_factor_bad_inputs(xp, asarray):
    a, m = asarray(np.ones((5, 3))), asarray(np.ones((4, 2)))
    with pytest.raises(
        ValueError, match=r"same number of rows for side='right'; got a.shape=\(5, 3\)"
    ):
        lowrank.optimal_factor(a, m)
    with pytest.raises(ValueError, match="same number of columns for side='left'"):
        lowrank.optimal_factor(a, m, side="left")
    with pytest.raises(ValueError, match="`side` must be one of"):
        lowrank.optimal_factor(a, a, side="both")
    with pytest.raises(ValueError, match="do not broadcast"):
        lowrank.optimal_factor(asarray(np.ones((2, 5, 3))), asarray(np.ones((3, 5, 2))))
    with pytest.raises(ValueError, match="`m` must have ndim >= 2"):
        lowrank.optimal_factor(a, asarray(np.ones(5)))
    with pytest.raises(ValueError, match="`m` contains NaN or Inf"):
        lowrank.optimal_factor(a, asarray(np.full((5, 2), np.inf)))
    with pytest.raises(ValueError, match="`rtol` must be finite and >= 0"):
        lowrank.optimal_factor(a, a, rtol=-1.0)


def test_factor_mixed_namespaces():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="one array namespace"):
        lowrank.optimal_factor(np.ones((4, 2)), torch.ones((4, 3), dtype=torch.float64))


@given(m=st.integers(1, 7), n=st.integers(1, 7), data=st.data())
def test_property_pinv_shapes_and_identities(m, n, data):
    rank = data.draw(st.integers(0, min(m, n)))
    host = (
        reference.rank_deficient(m, n, rank, seed=data.draw(st.integers(0, 2**16)))
        if rank
        else np.zeros((m, n))
    )
    p = lowrank.pinv(host)
    assert p.shape == (n, m)
    scale = max(1.0, np.abs(host).max() * np.abs(p).max())
    assert np.allclose(host @ p @ host, host, atol=1e-10 * scale * max(1.0, np.abs(host).max()))
    assert np.allclose(p @ host @ p, p, atol=1e-10 * scale * max(1.0, np.abs(p).max()))
    assert np.allclose(p, reference.pinv_svd(host), atol=1e-10 * scale * max(1.0, np.abs(p).max()))


def test_factor_mixed_devices():
    torch = pytest.importorskip("torch")
    cpu = torch.ones((4, 2), dtype=torch.float64)
    meta = torch.ones((4, 3), dtype=torch.float64, device="meta")  # no GPU needed
    with pytest.raises(ValueError, match="one device"):
        lowrank.optimal_factor(cpu, meta)


@given(n=st.integers(1, 7), r=st.integers(1, 5), p=st.integers(1, 4), data=st.data())
def test_property_optimal_factor_is_pinv_times_m(n, r, p, data):
    rank = data.draw(st.integers(0, min(n, r)))
    seed = data.draw(st.integers(0, 2**16))
    A = reference.rank_deficient(n, r, rank, seed=seed) if rank else np.zeros((n, r))
    M = np.random.default_rng(seed).standard_normal((n, p))
    B = lowrank.optimal_factor(A, M)
    assert B.shape == (r, p)
    scale = max(1.0, np.abs(M).max()) * max(1.0, np.abs(reference.pinv_svd(A)).max())
    assert np.allclose(B, reference.pinv_svd(A) @ M, atol=1e-10 * scale)
    left = lowrank.optimal_factor(A.T, M.T, side="left")  # argmin_X ‖X Aᵀ − Mᵀ‖ = Bᵀ
    assert np.allclose(left, B.T, atol=1e-10 * scale)
