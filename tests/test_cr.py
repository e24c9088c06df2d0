"""CR approximation of matrix products: invariants on every backend."""

from __future__ import annotations

import itertools
import math

import array_api_compat.numpy as npx
import numpy as np
import pytest
import ref_cr
from helpers import backend_name, eps, same_namespace, to_numpy

import lowrank
from lowrank import CRNorms, cr_expected_error, cr_factors, cr_matmul, cr_norms
from lowrank._agnostic import _cr as agn

X3 = np.array([[1.0, 0, 1], [0, 1, 1]])  # worked example of docs/theory/cr.md
Y3 = np.array([[1.0, 0], [0, 1], [1, 1]])


def power_law(n, inner, m, alpha=1.0, seed=0):
    rng = np.random.default_rng(seed)
    scale = np.arange(1, inner + 1) ** -alpha
    return rng.standard_normal((n, inner)) * scale, rng.standard_normal((inner, m))


class FakeRandom:
    """Replays given uniforms / permutations, so the real sampler can be enumerated."""

    def __init__(self, u, perm=None):
        self.u, self.perm = np.asarray(u, dtype=float), perm

    def uniform(self, shape, dtype):
        return self.u.reshape(shape)

    def permutation(self, n):
        return np.asarray(self.perm)


def plan(rank, probabilities="optimal", replace=True, method="sample", rescale="none"):
    return agn.CRPlan(rank, method, probabilities, replace, rescale)


def run_plan(X, Y, pl, rand):
    na, nb = agn.norms(X, Y, npx)
    gather = lambda *args: agn.gather_scale(*args, npx)  # noqa: E731
    C, R, idx, lam = agn.factors(X, Y, na, nb, pl, rand, gather, npx)
    return C @ R, idx, lam


# -- worked example (docs/theory/cr.md) ----------------------------------------------------


def test_worked_example_errors_and_selection():
    for r in (1, 2, 5):
        assert math.isclose(float(cr_expected_error(X3, Y3, r)), 6 / r, rel_tol=1e-14)
        uni = float(cr_expected_error(X3, Y3, r, probabilities="uniform"))
        assert math.isclose(uni, 8 / r, rel_tol=1e-13)
    best1, sets1 = ref_cr.brute_force_best(X3, Y3, 1)
    best2, sets2 = ref_cr.brute_force_best(X3, Y3, 2)
    assert (best1, sets1, best2, sets2) == (2.0, [(2,)], 1.0, [(0, 2), (1, 2)])
    top1 = cr_factors(X3, Y3, 1, method="topk")
    top2 = cr_factors(X3, Y3, 2, method="topk")
    assert to_numpy(top1.indices).tolist() == [2]
    assert to_numpy(top2.indices).tolist() == [0, 2]  # tie-break: smaller index first
    assert ref_cr.cr_error2(X3, Y3, [0, 2]) == best2
    diag = cr_factors(X3, Y3, 1, method="topk", rescale="diagonal")
    assert math.isclose(float(diag.weights[0]), 1.5, rel_tol=1e-14)
    assert math.isclose(float(np.sum((diag.C @ diag.R - X3 @ Y3) ** 2)), 1.0, rel_tol=1e-13)


def test_both_factors_carry_the_sampling_scale():
    X, Y = power_law(5, 12, 4, seed=14)
    f = cr_factors(X, Y, 7, rng=2)
    w = np.linalg.norm(X, axis=0) * np.linalg.norm(Y, axis=1)
    p = w / w.sum()
    scale = 1 / np.sqrt(7 * p[f.indices])  # (r p_{s_j})^(-1/2) on C and on R
    np.testing.assert_allclose(f.C, X[:, f.indices] * scale, rtol=1e-13)
    np.testing.assert_allclose(f.R, Y[f.indices] * scale[:, None], rtol=1e-13)
    np.testing.assert_allclose(f.weights, scale**2, rtol=1e-13)
    assert np.all(np.diff(f.indices) >= 0)


# -- exact enumeration of the real sampler -------------------------------------------


def _iid_u(p, seq):
    cdf = np.cumsum(p)
    lo = np.concatenate(([0.0], cdf[:-1]))
    return [(lo[i] + cdf[i]) / 2 / cdf[-1] for i in seq]


@pytest.mark.parametrize("kind", ["optimal", "uniform", "random"])
def test_iid_exact_enumeration(kind):
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((3, 4)), rng.standard_normal((4, 3))
    r = 2
    probs = rng.dirichlet(np.ones(4)) if kind == "random" else kind
    p = to_numpy(agn.probabilities(probs, np.prod(agn.norms(X, Y, npx), axis=0), npx))
    mean, err = np.zeros((3, 3)), 0.0
    for seq, prob in ref_cr.iid_sequences(p, r):
        est, idx, lam = run_plan(X, Y, plan(r, probs), FakeRandom(_iid_u(p, seq)))
        assert sorted(seq) == idx.tolist()
        np.testing.assert_allclose(lam, 1 / (r * p[idx]), rtol=1e-14)
        mean += prob * est
        err += prob * np.sum((est - X @ Y) ** 2)
    np.testing.assert_allclose(mean, X @ Y, atol=1e-13)
    assert math.isclose(err, ref_cr.expected_error_formula(X, Y, p, r), rel_tol=1e-12)
    assert math.isclose(err, float(cr_expected_error(X, Y, r, probabilities=probs)), rel_tol=1e-12)


def test_optimal_probabilities_minimise_expected_error():
    rng = np.random.default_rng(4)
    X, Y = rng.standard_normal((4, 6)), rng.standard_normal((6, 5))
    best = float(cr_expected_error(X, Y, 3))
    w = np.linalg.norm(X, axis=0) * np.linalg.norm(Y, axis=1)
    assert math.isclose(best, ((w.sum() ** 2) - np.sum((X @ Y) ** 2)) / 3, rel_tol=1e-12)
    for _ in range(50):
        p = rng.dirichlet(np.ones(6))
        assert float(cr_expected_error(X, Y, 3, probabilities=p)) >= best * (1 - 1e-12)


def test_without_replacement_exact_enumeration():
    rng = np.random.default_rng(5)
    X, Y = rng.standard_normal((3, 5)) * [3.0, 1, 0.5, 0.2, 2], rng.standard_normal((5, 2))
    r = 3
    p = np.prod(agn.norms(X, Y, npx), axis=0)
    p = p / p.sum()
    pi = ref_cr.inclusion_probabilities(p, r)
    certain = pi >= 1
    mean, incl = np.zeros((3, 2)), np.zeros(5)
    for perm in itertools.permutations(range(5)):
        cum = np.cumsum(np.where(certain, 0.0, pi)[list(perm)])
        for lo, hi in ref_cr.systematic_intervals(cum):
            prob = (hi - lo) / math.factorial(5)
            est, idx, lam = run_plan(
                X, Y, plan(r, replace=False), FakeRandom([(lo + hi) / 2], perm)
            )
            assert len(set(idx.tolist())) == r  # no duplicated columns
            np.testing.assert_allclose(lam, 1 / pi[idx], rtol=1e-12)
            mean += prob * est
            incl[idx] += prob
    np.testing.assert_allclose(incl, pi, atol=1e-12)
    np.testing.assert_allclose(mean, X @ Y, atol=1e-12)


# -- Monte-Carlo at larger sizes -----------------------------------------------------


@pytest.mark.parametrize("replace", [True, False])
def test_monte_carlo_unbiased_and_error(replace):
    X, Y = power_law(20, 60, 15, alpha=0.7, seed=1)
    r, draws = 12, 400
    ests = np.stack([cr_matmul(X, Y, r, replace=replace, rng=s) for s in range(draws)])
    errs = np.sum((ests - X @ Y) ** 2, axis=(1, 2))
    expected = float(cr_expected_error(X, Y, r))
    # E‖mean − XY‖² = E err / draws; 6x that is a > 4-sigma event for a sum of 300 terms
    assert np.sum((ests.mean(axis=0) - X @ Y) ** 2) <= 6 * errs.mean() / draws
    if replace:  # CLT: the mean of 400 errors is within ~4 standard errors
        assert abs(errs.mean() - expected) <= 4 * errs.std() / math.sqrt(draws)
    else:  # HT without replacement: no closed form; at most the i.i.d. error here
        assert errs.mean() <= expected


# -- deterministic selection and rescaling -------------------------------------------


def test_topk_is_optimal_for_orthogonal_outer_products():
    rng = np.random.default_rng(6)
    Q, _ = np.linalg.qr(rng.standard_normal((8, 6)))
    X = Q * rng.uniform(0.1, 3, 6)  # orthogonal columns: <v_i, v_j> = 0, so top-k is optimal
    Y = rng.standard_normal((6, 4))
    for r in range(1, 6):
        best, _ = ref_cr.brute_force_best(X, Y, r)
        top = cr_factors(X, Y, r, method="topk")
        err = float(np.sum((top.C @ top.R - X @ Y) ** 2))
        assert math.isclose(err, best, rel_tol=1e-10, abs_tol=1e-12)


@pytest.mark.parametrize(
    ("method", "replace"), [("topk", True), ("sample", True), ("sample", False)]
)
def test_diagonal_rescale_never_increases_error(method, replace):
    X, Y = power_law(10, 30, 8, alpha=0.5, seed=7)
    for seed in range(5):
        plain = cr_factors(X, Y, 6, method=method, replace=replace, rng=seed)
        diag = cr_factors(X, Y, 6, method=method, replace=replace, rescale="diagonal", rng=seed)
        idx = plain.indices
        np.testing.assert_array_equal(diag.indices, idx)
        e_diag = ref_cr.cr_error2(X, Y, idx, diag.weights)
        tol = 1 + 1e3 * eps("float64")
        assert e_diag <= ref_cr.cr_error2(X, Y, idx) * tol  # unscaled selection, λ = 1
        assert e_diag <= ref_cr.cr_error2(X, Y, idx, plain.weights) * tol
        lam = ref_cr.diagonal_lstsq(X, Y, idx)
        assert math.isclose(e_diag, ref_cr.cr_error2(X, Y, idx, lam), rel_tol=1e-9)


def test_gram_identity_matches_direct_product():
    rng = np.random.default_rng(8)
    for n, inner, m in [(30, 4, 20), (3, 40, 5)]:  # both branches of product_fro2
        X, Y = rng.standard_normal((n, inner)), rng.standard_normal((inner, m))
        direct = np.sum((X @ Y) ** 2)
        assert math.isclose(float(agn.product_fro2(X, Y, npx)), direct, rel_tol=1e-12)


# -- edge cases ---------------------------------------------------


def test_all_zero_product_falls_back_to_uniform():
    X = np.zeros((3, 4))
    X[:, 1] = 1.0
    Y = np.zeros((4, 2))
    Y[2] = 1.0  # every outer product is zero, w = 0
    f = cr_factors(X, Y, 8, rng=0)
    assert np.all(f.C @ f.R == 0)
    assert len(set(f.indices.tolist())) > 1  # uniform, not a degenerate distribution
    np.testing.assert_allclose(f.weights, 4 / 8)
    assert float(cr_expected_error(X, Y, 3)) == 0.0


def test_empty_inner_dimension():
    X, Y = np.zeros((3, 0)), np.zeros((0, 2))
    for kw in ({}, {"method": "topk"}, {"replace": False}, {"probabilities": "uniform"}):
        f = cr_factors(X, Y, 2, rng=0, **kw)
        assert (f.C.shape, f.R.shape, f.indices.shape) == ((3, 0), (0, 2), (0,))
        assert np.all(cr_matmul(X, Y, 2, rng=0, **kw) == np.zeros((3, 2)))
    assert float(cr_expected_error(X, Y, 2)) == 0.0


def test_rank_at_least_l():
    rng = np.random.default_rng(9)
    X, Y = rng.standard_normal((4, 5)), rng.standard_normal((5, 3))
    for kw in ({"method": "topk"}, {"replace": False}):
        f = cr_factors(X, Y, 7, rng=0, **kw)
        assert f.indices.tolist() == list(range(5))
        np.testing.assert_allclose(f.C @ f.R, X @ Y, atol=1e-13)
    assert cr_factors(X, Y, 12, rng=0).C.shape == (4, 12)  # i.i.d. draws may exceed l


def test_zero_probability_allowed_only_on_zero_contributions():
    X, Y = X3.copy(), Y3.copy()
    Y[1] = 0.0  # outer product 1 vanishes
    ok = cr_factors(X, Y, 3, probabilities=np.array([0.5, 0.0, 0.5]), rng=0)
    assert 1 not in ok.indices.tolist()
    with pytest.raises(ValueError, match="index 0"):
        cr_factors(X, Y, 3, probabilities=np.array([0.0, 0.5, 0.5]))
    with pytest.raises(ValueError, match="biased"):
        cr_expected_error(X, Y, 3, probabilities=np.array([0.0, 0.5, 0.5]))


def test_without_replacement_zero_mass_fill():
    X, Y = X3.copy(), Y3.copy()
    Y[0] = 0.0  # only indices 1, 2 carry mass under "optimal"
    f = cr_factors(X, Y, 3, replace=False, rng=0)
    assert f.indices.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(f.weights, [0.0, 1.0, 1.0])
    np.testing.assert_allclose(f.C @ f.R, X @ Y, atol=1e-14)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"b": np.ones((4, 2))}, ValueError, "inner dimensions"),
        ({"rank": 0}, ValueError, "rank"),
        ({"rank": 2.0}, TypeError, "rank"),
        ({"probabilities": np.array([0.5, 0.7, -0.2])}, ValueError, ">= 0"),
        ({"probabilities": np.array([0.5, 0.2, 0.2])}, ValueError, "sum to 1"),
        ({"probabilities": np.array([0.5, 0.5])}, ValueError, "shape"),
        ({"probabilities": "norm"}, ValueError, "probabilities"),
        ({"method": "greedy"}, ValueError, "method"),
        ({"rescale": "full"}, ValueError, "rescale"),
        ({"replace": 1}, TypeError, "replace"),
        ({"method": "topk", "probabilities": "uniform"}, ValueError, "sample"),
        ({"a": X3 + 0j}, TypeError, "real"),
        ({"a": np.ones(3)}, ValueError, "ndim"),
        ({"norms": [1.0, 2.0]}, TypeError, "norms"),
        ({"norms": (np.ones(2), None)}, ValueError, "norms.columns"),
        ({"norms": (None, -np.ones(3))}, ValueError, ">= 0"),
    ],
)
def test_bad_input(kwargs, exc, match):
    args = {"a": X3, "b": Y3, "rank": 2} | kwargs
    a, b, rank = args.pop("a"), args.pop("b"), args.pop("rank")
    with pytest.raises(exc, match=match):
        cr_factors(a, b, rank, **args)


@pytest.mark.parametrize("probabilities", ["optimal", "uniform"])
def test_nan_and_inf_are_rejected(probabilities):
    bad = X3.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cr_matmul(bad, Y3, 2, probabilities=probabilities)
    inf = Y3.copy()
    inf[2, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        cr_factors(X3, inf, 2, probabilities=probabilities)
    assert cr_matmul(
        bad, Y3, 2, method="sample", probabilities="uniform", check_finite=False, rng=0
    ).shape == (2, 2)


# -- reproducibility, reuse, batching, backends --------------------------------------


def test_seeds_reproduce_and_inputs_untouched():
    X, Y = power_law(6, 40, 5, seed=2)
    X0, Y0 = X.copy(), Y.copy()
    for kw in ({}, {"replace": False}, {"probabilities": "uniform"}):
        f1, f2 = cr_factors(X, Y, 10, rng=11, **kw), cr_factors(X, Y, 10, rng=11, **kw)
        assert all(np.array_equal(u, v) for u, v in zip(f1, f2, strict=True))
        f3 = cr_factors(X, Y, 10, rng=np.random.default_rng(12), **kw)
        assert not np.array_equal(f1.indices, f3.indices)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(Y, Y0)


def test_precomputed_norms_give_the_same_draws():
    X, Y = power_law(7, 50, 6, seed=3)
    norms = cr_norms(X, Y)
    assert isinstance(norms, CRNorms)
    np.testing.assert_allclose(norms.columns, np.linalg.norm(X, axis=0), rtol=1e-13)
    np.testing.assert_allclose(norms.rows, np.linalg.norm(Y, axis=1), rtol=1e-13)
    ref = cr_matmul(X, Y, 9, rng=5)
    for given in (norms, (None, norms.rows), (norms.columns, None)):
        np.testing.assert_allclose(cr_matmul(X, Y, 9, rng=5, norms=given), ref, rtol=1e-12)
    assert float(cr_expected_error(X, Y, 9, norms=norms)) == pytest.approx(
        float(cr_expected_error(X, Y, 9)), rel=1e-12
    )


def test_batched_inputs():
    rng = np.random.default_rng(13)
    A, B = rng.standard_normal((2, 3, 5, 12)), rng.standard_normal((3, 12, 4))
    f = cr_factors(A, B, 6, rng=0)
    assert (f.C.shape, f.R.shape, f.indices.shape) == ((2, 3, 5, 6), (2, 3, 6, 4), (2, 3, 6))
    for i, j in itertools.product(range(2), range(3)):
        idx, lam = f.indices[i, j], f.weights[i, j]
        np.testing.assert_allclose(
            f.C[i, j] @ f.R[i, j], (A[i, j][:, idx] * lam) @ B[j][idx], atol=1e-12
        )
        top = cr_factors(A[i, j], B[j], 4, method="topk")
        np.testing.assert_array_equal(cr_factors(A, B, 4, method="topk").indices[i, j], top.indices)
    err = cr_expected_error(A, B, 6)
    assert err.shape == (2, 3)
    assert float(err[1, 2]) == pytest.approx(float(cr_expected_error(A[1, 2], B[2], 6)), rel=1e-12)


@pytest.mark.parametrize(
    "kw", [{}, {"method": "topk"}, {"replace": False}, {"rescale": "diagonal"}]
)
def test_backends_preserve_namespace_dtype_and_agree(xp, dtype, asarray, use_kernels, kw):
    X, Y = power_law(9, 30, 7, seed=4)
    a, b = asarray(X, dtype=dtype), asarray(Y, dtype=dtype)
    f = cr_factors(a, b, 8, rng=3, **kw)
    M = cr_matmul(a, b, 8, rng=3, **kw)
    for arr in (f.C, f.R, f.weights, M):
        assert same_namespace(xp, arr)
        assert arr.dtype == dtype
    assert f.indices.dtype == xp.int64
    idx, lam = to_numpy(f.indices), to_numpy(f.weights).astype(float)
    tol = 100 * float(xp.finfo(dtype).eps)
    est = (X[:, idx] * lam) @ Y[idx]
    np.testing.assert_allclose(to_numpy(f.C) @ to_numpy(f.R), est, rtol=tol, atol=tol * 10)
    if kw.get("rescale") and agn.diagonal_costs_more(9, 30, 7, 8):
        est = X @ Y  # rescaling would cost more than the product: cr_matmul is exact
    np.testing.assert_allclose(to_numpy(M), est, rtol=tol, atol=tol * 10)
    err = cr_expected_error(a, b, 8)
    assert same_namespace(xp, err)
    assert err.shape == ()
    assert float(err) == pytest.approx(float(cr_expected_error(X, Y, 8)), rel=tol * 100)
    if backend_name(xp) == "numpy":
        with lowrank.config_context(use_kernels=not use_kernels):  # the other path, same draw
            other = cr_factors(a, b, 8, rng=3, **kw)
        np.testing.assert_array_equal(other.indices, f.indices)
        np.testing.assert_allclose(other.C, f.C, rtol=tol)


def test_integer_inputs_compute_in_float64():
    f = cr_factors(X3.astype(int), Y3.astype(int), 2, method="topk")
    assert (f.C.dtype, f.weights.dtype) == (np.float64, np.float64)


def test_mixed_namespaces_rejected():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="namespace"):
        cr_factors(X3, torch.asarray(Y3), 2)


# -- cr_matmul merges repeated draws ---------------------------------------------------


def test_merge_repeats_sums_weights_of_equal_indices():
    idx = np.array([1, 1, 1, 4, 7, 7], dtype=np.int64)
    lam = np.array([0.5, 0.5, 0.5, 2.0, 3.0, 3.0])
    m_idx, m_lam = agn.merge_repeats(idx, lam, npx)
    np.testing.assert_array_equal(m_idx, [1, 4, 7])
    np.testing.assert_allclose(m_lam, [1.5, 2.0, 6.0])
    distinct = np.array([0, 2, 3], dtype=np.int64)
    assert agn.merge_repeats(distinct, lam[:3], npx)[0] is distinct  # nothing to merge


@pytest.mark.parametrize("kw", [{}, {"rescale": "diagonal"}, {"probabilities": "uniform"}])
@pytest.mark.parametrize("batched", [False, True])
def test_cr_matmul_equals_the_factors_product_with_many_repeats(kw, batched):
    # alpha = 2: a few heavy outer products are drawn again and again
    X, Y = power_law(11, 40, 9, alpha=2.0, seed=8)
    if batched:
        X = np.stack([X, X[::-1]])
    f = cr_factors(X, Y, 64, rng=7, **kw)
    if not batched:
        assert np.unique(f.indices).size < 64 // 2  # the merge really has work to do
    M = cr_matmul(X, Y, 64, rng=7, **kw)
    if kw.get("rescale"):  # at this size rescaling costs more than the exact product
        assert agn.diagonal_costs_more(11, 40, 9, 64)
        np.testing.assert_allclose(M, X @ Y, rtol=1e-12, atol=1e-12)
        M = agn_rescaled_product(X, Y, f)
    tol = 1e-12
    if kw.get("rescale"):  # rescaled weights solve a least-squares problem: rounding ~ eps·κ(UᵀU)
        idx = np.unique(f.indices)
        C, R = X[..., idx], Y[idx]
        gram = (np.swapaxes(C, -1, -2) @ C) * (R @ R.T)
        tol = max(tol, 10 * eps("float64") * float(np.max(np.linalg.cond(gram))))
    np.testing.assert_allclose(M, f.C @ f.R, rtol=tol, atol=tol)


def test_merged_product_is_still_unbiased():
    X, Y = power_law(6, 12, 5, alpha=1.5, seed=9)
    mean = np.mean([cr_matmul(X, Y, 20, rng=s) for s in range(4000)], axis=0)
    assert np.linalg.norm(mean - X @ Y) < 0.05 * np.linalg.norm(X @ Y)


def agn_rescaled_product(X, Y, f):
    """The merged, rescaled CR product of the factors' draws (what cr_matmul computes
    when rescaling is cheaper than the product)."""
    out = []
    for x, idx in zip(X if X.ndim == 3 else [X], f.indices if X.ndim == 3 else [f.indices],
                      strict=True):
        m_idx, _ = agn.merge_repeats(idx, np.ones(idx.shape), npx)
        lam = agn.diagonal_weights(x, Y, m_idx, npx)
        out.append((x[:, m_idx] * lam) @ Y[m_idx])
    return np.stack(out) if X.ndim == 3 else out[0]


@pytest.mark.parametrize(
    ("shape", "rank", "falls_back"),
    [((2316, 384, 1536), 96, False), ((2316, 384, 1536), 384, True), ((30, 40, 20), 30, True),
     ((4000, 200, 4000), 50, False)],
)
def test_rescaled_product_falls_back_to_the_exact_one_when_dearer(shape, rank, falls_back):
    n, inner, m = shape
    assert agn.diagonal_costs_more(n, inner, m, rank) is falls_back
    if n * m <= 1000:
        X, Y = power_law(n, inner, m, seed=10)
        M = cr_matmul(X, Y, rank, rescale="diagonal", rng=0)
        np.testing.assert_allclose(M, X @ Y, rtol=1e-13, atol=1e-13)
