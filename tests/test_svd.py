"""truncated_svd: Eckart–Young optimality in both norms, invariants, dispatch, bad input."""

from __future__ import annotations

import os

import helpers
import numpy as np
import pytest
import reference
from hypothesis import given
from hypothesis import strategies as st

import lowrank
from lowrank import _svd_partial

SPECTRUM = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.05, 0.01])


def _reconstruct(res):
    U, S, Vh = (
        helpers.to_numpy(f).astype(
            np.complex128 if np.iscomplexobj(helpers.to_numpy(f)) else np.float64
        )
        for f in res
    )
    return (U * S[..., None, :]) @ Vh


def _eps(dtype):
    """Machine epsilon of a dtype given by name, NumPy scalar type or backend dtype."""
    name = getattr(dtype, "__name__", None) or str(dtype).rsplit(".", 1)[-1].strip("'>")
    return float(np.finfo(np.dtype(name)).eps)


def _tol(dtype, scale=1.0):
    return 64 * _eps(dtype) * scale


@pytest.mark.parametrize("rank", [0, 1, 4, 10])
def test_eckart_young_error_is_the_tail(xp, dtype, asarray, rank):
    host = helpers.matrix_with_spectrum(14, 10, SPECTRUM, seed=1)
    res = lowrank.truncated_svd(asarray(host, dtype=dtype), rank)
    diff = host - _reconstruct(res)
    frob, spec = reference.optimal_errors(host, rank)
    scale = np.linalg.norm(host)
    assert abs(np.linalg.norm(diff) - frob) <= _tol(dtype, scale)
    assert abs(np.linalg.norm(diff, 2) - spec) <= _tol(dtype, scale)
    assert np.allclose(
        helpers.to_numpy(res.S), SPECTRUM[:rank], rtol=_tol(dtype), atol=_tol(dtype, 5)
    )


def test_orthonormal_factors_and_sorted_values(xp, dtype, asarray):
    host = np.random.default_rng(2).standard_normal((12, 9))
    U, S, Vh = (helpers.to_numpy(f) for f in lowrank.truncated_svd(asarray(host, dtype=dtype), 6))
    assert np.abs(U.T @ U - np.eye(6)).max() <= _tol(dtype, 4)
    assert np.abs(Vh @ Vh.T - np.eye(6)).max() <= _tol(dtype, 4)
    assert np.all(np.diff(S) <= 0)
    assert np.all(S >= 0)


def test_result_keeps_namespace_dtype_and_device(xp, dtype, asarray):
    a = asarray(np.random.default_rng(3).standard_normal((7, 5)), dtype=dtype)
    res = lowrank.truncated_svd(a, 3)
    assert isinstance(res, lowrank.SVDResult)
    for f in res:
        assert helpers.same_namespace(xp, f)
        assert f.dtype == dtype
        assert lowrank._lib._compat.device(f) == lowrank._lib._compat.device(a)
    assert (res.U.shape, res.S.shape, res.Vh.shape) == ((7, 3), (3,), (3, 5))


def test_input_not_mutated(xp, asarray):
    host = np.random.default_rng(4).standard_normal((6, 8))
    a = asarray(host)
    lowrank.truncated_svd(a, 2)
    assert np.array_equal(helpers.to_numpy(a), host)


def test_no_random_rank_r_matrix_beats_it():
    rng = np.random.default_rng(5)
    host = helpers.matrix_with_spectrum(9, 7, [3.0, 2.5, 2.0, 1.0, 0.7, 0.3, 0.1], seed=5)
    rank = 2
    best = np.linalg.norm(host - _reconstruct(lowrank.truncated_svd(host, rank)))
    U, S, Vh = lowrank.truncated_svd(host, rank)
    for trial in range(300):
        if trial % 2:  # a random rank-r matrix
            cand = rng.standard_normal((9, rank)) @ rng.standard_normal((rank, 7))
            cand *= np.vdot(cand, host) / np.vdot(cand, cand)  # best scaling of it
        else:  # a small random rank-r perturbation of the optimum
            dU = 1e-3 * rng.standard_normal(U.shape)
            dV = 1e-3 * rng.standard_normal(Vh.shape)
            cand = ((U + dU) * S) @ (Vh + dV)
        assert np.linalg.norm(host - cand) >= best * (1 - 1e-12)


def test_batched_matches_each_slice(xp, asarray):
    host = np.random.default_rng(6).standard_normal((3, 2, 8, 6))
    res = lowrank.truncated_svd(asarray(host), 3)
    assert res.U.shape == (3, 2, 8, 3)
    assert res.S.shape == (3, 2, 3)
    assert res.Vh.shape == (3, 2, 3, 6)
    approx = _reconstruct(res)
    for idx in np.ndindex(3, 2):
        frob, _ = reference.optimal_errors(host[idx], 3)
        assert np.isclose(np.linalg.norm(host[idx] - approx[idx]), frob, rtol=1e-12)


def test_complex_input_is_optimal():
    host = helpers.matrix_with_spectrum(8, 6, [4.0, 3.0, 2.0, 1.0, 0.5, 0.1], seed=7, complex_=True)
    res = lowrank.truncated_svd(host, 3)
    assert res.S.dtype == np.float64
    assert res.U.dtype == np.complex128
    frob, _ = reference.optimal_errors(host, 3)
    assert np.isclose(np.linalg.norm(host - _reconstruct(res)), frob, rtol=1e-12)
    pivots = res.U[np.argmax(np.abs(res.U), axis=0), np.arange(3)]
    assert np.allclose(pivots.imag, 0)
    assert np.all(pivots.real > 0)


def test_signs_follow_svd_flip_rule(xp, asarray):
    U = helpers.to_numpy(
        lowrank.truncated_svd(asarray(np.random.default_rng(8).standard_normal((7, 5))), 4).U
    )
    assert np.all(U[np.argmax(np.abs(U), axis=0), np.arange(4)] > 0)


def test_integer_and_bool_promote_to_float64(xp):
    a = xp.asarray(np.arange(12).reshape(4, 3))
    assert lowrank.truncated_svd(a, 2).S.dtype == xp.float64
    b = xp.asarray(np.eye(3, dtype=bool))
    assert lowrank.truncated_svd(b, 1).U.dtype == xp.float64


def test_float16_is_computed_in_float32_and_returned_as_float16():
    a = np.random.default_rng(9).standard_normal((6, 4)).astype(np.float16)
    res = lowrank.truncated_svd(a, 2)
    assert all(f.dtype == np.float16 for f in res)


@pytest.mark.parametrize(
    ("shape", "rank"), [((0, 5), 0), ((5, 0), 0), ((4, 6), 0), ((2, 0, 3), 0), ((0, 4, 3), 2)]
)
def test_rank_zero_and_empty_give_empty_factors(xp, asarray, shape, rank):
    res = lowrank.truncated_svd(asarray(np.ones(shape)), rank)
    *batch, m, n = shape
    assert res.U.shape == (*batch, m, rank)
    assert res.S.shape == (*batch, rank)
    assert res.Vh.shape == (*batch, rank, n)


def test_partial_solver_is_used_exact_and_deterministic(monkeypatch):
    calls = []
    original = _svd_partial.propack_truncated_svd
    monkeypatch.setattr(
        _svd_partial, "propack_truncated_svd", lambda a, k: calls.append(k) or original(a, k)
    )
    s = 1.0 / np.arange(1, 301)
    host = helpers.matrix_with_spectrum(400, 300, s, seed=10)
    first = lowrank.truncated_svd(host, 8)
    assert calls == [8]
    assert np.array_equal(first.U, lowrank.truncated_svd(host, 8).U)  # same input, same output
    frob = np.sqrt(np.sum(s[8:] ** 2))  # the spectrum is known: no full SVD needed
    assert np.isclose(np.linalg.norm(host - _reconstruct(first)), frob, rtol=1e-12)
    assert np.allclose(first.S, s[:8], rtol=1e-12)
    U = first.U
    assert np.all(U[np.argmax(np.abs(U), axis=0), np.arange(8)] > 0)


def test_partial_solver_float32_keeps_dtype_and_accuracy():
    s = 1.0 / np.arange(1, 301)
    host = helpers.matrix_with_spectrum(300, 300, s, seed=11)
    res = lowrank.truncated_svd(host.astype(np.float32), 10)
    assert res.U.dtype == np.float32
    assert res.S.dtype == np.float32
    frob = np.sqrt(np.sum(s[10:] ** 2))
    assert abs(np.linalg.norm(host - _reconstruct(res)) - frob) <= _tol(
        "float32", np.linalg.norm(host)
    )


def test_partial_solver_failure_falls_back_to_exact_svd():
    # Repeated singular values: PROPACK silently returns wrong triplets on the identity.
    host = np.eye(320)
    host[0, 0] = 2.0
    res = lowrank.truncated_svd(host, 5)
    assert np.allclose(res.S, [2.0, 1.0, 1.0, 1.0, 1.0])
    frob, _ = reference.optimal_errors(host, 5)
    assert np.isclose(np.linalg.norm(host - _reconstruct(res)), frob, rtol=1e-12)


def test_verification_rejects_wrong_triplets():
    host = helpers.matrix_with_spectrum(30, 20, np.linspace(3, 1, 20), seed=12)
    U, S, Vh = np.linalg.svd(host, full_matrices=False)
    assert _svd_partial._is_leading_triplets(host, U[:, :4], S[:4], Vh[:4])
    assert not _svd_partial._is_leading_triplets(host, U[:, 1:5], S[1:5], Vh[1:5])  # missed sigma_1
    assert not _svd_partial._is_leading_triplets(
        host, U[:, :4], S[:4] * 1.01, Vh[:4]
    )  # wrong values
    rot = np.linalg.qr(np.random.default_rng(0).standard_normal((4, 4)))[0]
    assert not _svd_partial._is_leading_triplets(
        host, U[:, :4], S[:4], rot @ Vh[:4]
    )  # not triplets


def test_partial_solver_choice():
    assert _svd_partial.prefers_partial_solver((4096, 4096), 64, np.dtype(np.float64))
    assert not _svd_partial.prefers_partial_solver((4096, 4096), 1024, np.dtype(np.float64))
    assert not _svd_partial.prefers_partial_solver((100, 100), 2, np.dtype(np.float64))
    assert not _svd_partial.prefers_partial_solver((2, 4096, 4096), 8, np.dtype(np.float64))
    assert not _svd_partial.prefers_partial_solver((4096, 4096), 8, np.dtype(np.complex128))


@pytest.mark.parametrize("rank", [-1, 6])
def test_rank_out_of_range(xp, asarray, rank):
    with pytest.raises(
        ValueError, match=r"`rank` must satisfy 0 <= rank <= min\(a.shape\[-2:\]\) = 5"
    ):
        lowrank.truncated_svd(asarray(np.ones((7, 5))), rank)


@pytest.mark.parametrize("rank", [2.0, "2", None, True])
def test_rank_not_integer(rank):
    with pytest.raises(TypeError, match="`rank` must be an integer"):
        lowrank.truncated_svd(np.ones((4, 4)), rank)


def test_one_dimensional_input(xp, asarray):
    with pytest.raises(ValueError, match=r"`a` must have ndim >= 2; got shape \(5,\)"):
        lowrank.truncated_svd(asarray(np.ones(5)), 1)


def test_not_an_array():
    with pytest.raises(TypeError):
        lowrank.truncated_svd([[1.0, 2.0], [3.0, 4.0]], 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input(xp, asarray, bad):
    host = np.ones((4, 3))
    host[1, 2] = bad
    with pytest.raises(ValueError, match="`a` contains NaN or Inf"):
        lowrank.truncated_svd(asarray(host), 1)


def test_check_finite_false_skips_the_check(monkeypatch):
    def boom(*args):
        msg = "check_finite was called"
        raise AssertionError(msg)

    monkeypatch.setattr(lowrank._svd._validation, "check_finite", boom)
    res = lowrank.truncated_svd(np.eye(3), 1, check_finite=False)
    assert res.S.shape == (1,)
    with pytest.raises(AssertionError):
        lowrank.truncated_svd(np.eye(3), 1)


@given(
    batch=st.lists(st.integers(1, 2), max_size=2),
    m=st.integers(1, 7),
    n=st.integers(1, 7),
    data=st.data(),
)
def test_property_shapes_ranks_and_optimality(batch, m, n, data):
    rank = data.draw(st.integers(0, min(m, n)))
    seed = data.draw(st.integers(0, 2**16))
    host = np.random.default_rng(seed).standard_normal((*batch, m, n))
    res = lowrank.truncated_svd(host, rank)
    assert res.U.shape == (*batch, m, rank)
    assert res.Vh.shape == (*batch, rank, n)
    approx = _reconstruct(res)
    for idx in np.ndindex(*batch):
        frob, _ = reference.optimal_errors(host[idx], rank)
        assert abs(np.linalg.norm(host[idx] - approx[idx]) - frob) <= 1e-12 * max(
            1.0, np.linalg.norm(host[idx])
        )
        U = res.U[idx]
        assert np.allclose(U.T @ U, np.eye(rank), atol=1e-12)


def test_norm_facts_and_eigen_construction():
    # ‖M‖_F² = Σσ², ‖M‖_2 = σ_1 ≤ ‖M‖_F; the SVD built from eigh(MᵀM).
    host = helpers.matrix_with_spectrum(9, 6, [4.0, 3.0, 2.0, 1.0, 0.0, 0.0], seed=13)
    _U, S, _Vh = lowrank.truncated_svd(host, 6)
    assert np.isclose(np.linalg.norm(host) ** 2, np.sum(S**2), rtol=1e-12)
    assert np.isclose(np.linalg.norm(host, 2), S[0], rtol=1e-12)
    assert S[0] <= np.linalg.norm(host)
    Ue, se, Vhe = reference.svd_via_eig(host)
    assert se.shape == (4,)
    assert np.allclose((Ue * se) @ Vhe, host, atol=1e-10)
    assert np.allclose(Ue.T @ Ue, np.eye(4), atol=1e-10)
    assert np.allclose(se, S[:4], rtol=1e-10)


def test_related_rank_2r_problem_reaches_the_2r_tail():
    # argmin ‖A Aᵀ M + M Bᵀ B − M‖_F with A = U[:, :r], B = Vh[r:2r] reaches the tail
    # beyond 2r, and random orthonormal A, B never beat it (docs/theory/svd.md).
    rng = np.random.default_rng(14)
    host = rng.standard_normal((8, 7))
    r = 2
    U, _S, Vh = lowrank.truncated_svd(host, 2 * r)
    A, B = U[:, :r], Vh[r : 2 * r]
    best = np.linalg.norm(A @ A.T @ host + host @ B.T @ B - host)
    assert np.isclose(best, reference.optimal_errors(host, 2 * r)[0], rtol=1e-12)
    for _ in range(200):
        Ar = np.linalg.qr(rng.standard_normal((8, r)))[0]
        Br = np.linalg.qr(rng.standard_normal((7, r)))[0].T
        assert np.linalg.norm(Ar @ Ar.T @ host + host @ Br.T @ Br - host) >= best * (1 - 1e-12)


def test_partial_solver_on_rank_deficient_input():
    # rank(a) = 5 < requested 10: the extra triplets must still be orthonormal.
    rng = np.random.default_rng(15)
    host = rng.standard_normal((400, 5)) @ rng.standard_normal((5, 300))
    assert _svd_partial.propack_truncated_svd(host, 10) is not None  # the partial path
    U, S, Vh = lowrank.truncated_svd(host, 10)
    assert np.abs(U.T @ U - np.eye(10)).max() < 1e-13
    assert np.abs(Vh @ Vh.T - np.eye(10)).max() < 1e-13
    assert np.linalg.norm(host - (U * S) @ Vh) <= 1e-13 * np.linalg.norm(host)
    assert np.all(S[5:] <= 1e-12 * S[0])


def test_partial_solver_prints_nothing_at_c_level(capfd):
    # LAPACK inside PROPACK writes to fd 1 directly (DLASCL messages on flat spectra);
    # the silencer must catch such writes, and a flat-spectrum call must print nothing
    with _svd_partial.quiet_stdout():
        os.write(1, b"DLASCL parameter 4 had an illegal value\n")
    flat = np.linalg.qr(np.random.default_rng(0).standard_normal((300, 256)))[0]
    assert _svd_partial.prefers_partial_solver(flat.shape, 8, flat.dtype)
    S = lowrank.truncated_svd(flat, 8).S
    assert np.allclose(S, 1.0, rtol=1e-12)
    out, _ = capfd.readouterr()
    assert out == ""
    print("still connected")  # fd 1 and sys.stdout are restored afterwards
    assert capfd.readouterr().out == "still connected\n"


def test_partial_solver_threshold_matches_docstring():
    doc = lowrank.truncated_svd.__doc__
    assert f"min(m, n) >= {_svd_partial._MIN_SIZE}" in " ".join(doc.split())
