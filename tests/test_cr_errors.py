"""Expected errors of every CR method, and method="auto" (exact values and estimates)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import ref_cr
from helpers import to_numpy

from lowrank import cr_expected_error, cr_factors, cr_matmul


def power_law(n, inner, m, alpha=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, inner)) * np.arange(1, inner + 1) ** -alpha, (
        rng.standard_normal((inner, m))
    )


# (n, l, m): the Gram route (l(n + m) < nm) and the product route
SHAPES = [(30, 8, 25), (4, 20, 3)]


@pytest.mark.parametrize(("n", "inner", "m"), SHAPES)
@pytest.mark.parametrize("rescale", ["none", "diagonal"])
def test_topk_error_is_the_exact_error_of_its_selection(xp, asarray, n, inner, m, rescale):
    X, Y = power_law(n, inner, m, alpha=0.5, seed=1)
    for r in (1, 3, inner - 1, inner):
        f = cr_factors(X, Y, r, method="topk", rescale=rescale)
        exact = ref_cr.cr_error2(X, Y, f.indices, f.weights)
        got, se = cr_expected_error(
            asarray(X), asarray(Y), r, method="topk", rescale=rescale, return_std=True
        )
        assert float(got) == pytest.approx(exact, rel=1e-10, abs=1e-12 * np.sum((X @ Y) ** 2))
        assert float(se) == 0.0


def _without_replacement_exact(X, Y, r):
    """E‖CR − XY‖² of systematic πps by enumerating every order and every u-interval."""
    w = np.linalg.norm(X, axis=0) * np.linalg.norm(Y, axis=1)
    pi = ref_cr.inclusion_probabilities(w / w.sum(), r)
    certain, inner = pi >= 1, X.shape[1]
    total = 0.0
    for perm in itertools.permutations(range(inner)):
        cum = np.cumsum(np.where(certain, 0.0, pi)[list(perm)])
        for lo, hi in ref_cr.systematic_intervals(cum):
            points = (lo + hi) / 2 + np.arange(r - certain.sum())
            drawn = [perm[int(np.searchsorted(cum, t, side="right"))] for t in points]
            idx = sorted([*np.flatnonzero(certain).tolist(), *drawn])
            total += (hi - lo) / math.factorial(inner) * ref_cr.cr_error2(X, Y, idx, 1 / pi[idx])
    return total


def test_without_replacement_estimate_is_unbiased():
    X, Y = power_law(6, 5, 4, alpha=0.8, seed=2)
    exact = _without_replacement_exact(X, Y, 2)
    est, se = cr_expected_error(X, Y, 2, replace=False, samples=400, return_std=True, rng=0)
    assert 0 < float(se) < 0.2 * exact
    assert abs(float(est) - exact) <= 4.5 * float(se)  # CLT: a > 4-sigma miss is rare


@pytest.mark.parametrize("replace", [True, False])
def test_rescaled_estimate_matches_independent_draws(replace):
    X, Y = power_law(9, 14, 7, alpha=0.6, seed=3)
    est, se = cr_expected_error(
        X, Y, 4, replace=replace, rescale="diagonal", samples=200, return_std=True, rng=1
    )
    draws = [cr_factors(X, Y, 4, replace=replace, rescale="diagonal", rng=s) for s in
             range(1000, 1300)]
    errs = [np.sum((f.C @ f.R - X @ Y) ** 2) for f in draws]
    gap = abs(float(est) - np.mean(errs))
    assert gap <= 4.5 * math.hypot(float(se), np.std(errs) / math.sqrt(len(errs)))
    if replace:  # rescaling never hurts a fixed selection, so neither its expectation
        assert float(est) <= float(cr_expected_error(X, Y, 4)) + 4.5 * float(se)


def test_iid_formula_and_estimate_agree():
    X, Y = power_law(8, 12, 6, seed=4)
    exact, se0 = cr_expected_error(X, Y, 5, return_std=True)
    assert float(se0) == 0.0
    # the formula against the same sampler's draws, priced one by one
    errs = [ref_cr.cr_error2(X, Y, *cr_factors(X, Y, 5, rng=s)[2:]) for s in range(600)]
    assert abs(np.mean(errs) - float(exact)) <= 4.5 * np.std(errs) / math.sqrt(600)


def test_batched_estimates_and_empty_product():
    X, Y = power_law(5, 9, 4, seed=5)
    A = np.stack([X, 2 * X])
    got = cr_expected_error(A, Y, 3, method="topk")
    assert got.shape == (2,)
    assert float(got[1]) == pytest.approx(4 * float(got[0]), rel=1e-12)
    est = cr_expected_error(A, Y, 3, replace=False, samples=4, rng=0)
    assert est.shape == (2,)
    assert float(cr_expected_error(np.ones((0, 5)), np.ones((5, 2)), 2, replace=False)) == 0.0


def test_seeded_estimate_reproduces():
    X, Y = power_law(7, 10, 5, seed=6)
    kw = {"replace": False, "samples": 8, "rng": 3}
    assert float(cr_expected_error(X, Y, 4, **kw)) == float(cr_expected_error(X, Y, 4, **kw))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [({"samples": 0}, ValueError, "samples"), ({"samples": 2.5}, TypeError, "samples"),
     ({"return_std": "yes"}, TypeError, "return_std"), ({"method": "best"}, ValueError, "method")],
)
def test_bad_estimate_options(kwargs, exc, match):
    X, Y = power_law(3, 4, 2)
    with pytest.raises(exc, match=match):
        cr_expected_error(X, Y, 2, **kwargs)


# -- method="auto" ---------------------------------------------------------------------


def test_auto_picks_topk_for_flat_orthogonal_outer_products():
    rng = np.random.default_rng(7)
    Q, _ = np.linalg.qr(rng.standard_normal((40, 30)))
    X, Y = Q * rng.uniform(0.9, 1.1, 30), rng.standard_normal((30, 20))
    top = float(cr_expected_error(X, Y, 10, method="topk"))
    iid = float(cr_expected_error(X, Y, 10))
    assert top < iid  # the premise: flat norms, orthogonal outer products
    auto = cr_factors(X, Y, 10, method="auto", rng=0)
    np.testing.assert_array_equal(auto.indices, cr_factors(X, Y, 10, method="topk").indices)
    assert float(cr_expected_error(X, Y, 10, method="auto", rng=0)) == pytest.approx(top)


def test_auto_samples_when_outer_products_coincide():
    # every outer product is the same rank-1 matrix: i.i.d. optimal sampling is exact,
    # top-k misses (l - r)/l of the product
    x, y = np.arange(1.0, 6.0), np.arange(1.0, 4.0)
    X, Y = np.tile(x[:, None], (1, 12)), np.tile(y[None, :], (12, 1))
    assert float(cr_expected_error(X, Y, 3)) <= 1e-12 * np.sum((X @ Y) ** 2)
    M = cr_matmul(X, Y, 3, method="auto", rng=0)
    np.testing.assert_allclose(M, X @ Y, rtol=1e-12)
    f = cr_factors(X, Y, 3, method="auto", rng=0)
    assert not np.all(to_numpy(f.weights) == 1)  # sampled weights, not top-k's


def test_auto_on_every_backend(xp, asarray):
    X, Y = power_law(10, 16, 6, alpha=0.2, seed=8)
    f = cr_factors(asarray(X), asarray(Y), 5, method="auto", rng=0)
    idx, lam = to_numpy(f.indices), to_numpy(f.weights)
    np.testing.assert_allclose(to_numpy(f.C) @ to_numpy(f.R), (X[:, idx] * lam) @ Y[idx],
                               rtol=1e-10, atol=1e-12)
