"""CR routines are scale-equivariant over the finite range, and accept empty and user-p inputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import ref_cr
from helpers import to_numpy

from lowrank import cr_expected_error, cr_factors, cr_matmul

METHODS = [
    {},
    {"method": "topk"},
    {"replace": False},
    {"rescale": "diagonal"},
    {"probabilities": "uniform"},
    {"method": "topk", "rescale": "diagonal"},
]
# (dtype, scales): extremes where squares or products of entries leave the dtype's range
SCALES = [("float64", (1e150, 1e-150, 2.0**500, 2.0**-520)), ("float32", (1e18, 1e-18))]


def _data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    scale = np.arange(1, 31) ** -0.7
    X = (rng.standard_normal((12, 30)) * scale).astype(dtype)
    return X, rng.standard_normal((30, 9)).astype(dtype)


@pytest.mark.parametrize("kw", METHODS)
@pytest.mark.parametrize(("dtype", "scales"), SCALES)
def test_factors_and_product_are_scale_equivariant(xp, asarray, use_kernels, kw, dtype, scales):
    X, Y = _data(dtype)
    a, b = asarray(X, dtype=getattr(xp, dtype)), asarray(Y, dtype=getattr(xp, dtype))
    ref = cr_factors(a, b, 8, rng=3, **kw)
    ref_prod = to_numpy(cr_matmul(a, b, 8, rng=3, **kw)).astype(float)
    eps = float(np.finfo(dtype).eps)
    for s in scales:
        sa, sb = asarray(X * s, dtype=getattr(xp, dtype)), asarray(Y / s, dtype=getattr(xp, dtype))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            f = cr_factors(sa, b, 8, rng=3, **kw)
            g = cr_factors(a, sb, 8, rng=3, **kw)
            prod = to_numpy(cr_matmul(sa, sb, 8, rng=3, **kw)).astype(float)
        # the same selection; weights are scale-free; the product scales by s * (1/s)
        np.testing.assert_array_equal(to_numpy(f.indices), to_numpy(ref.indices))
        np.testing.assert_array_equal(to_numpy(g.indices), to_numpy(ref.indices))
        tol = 200 * eps  # a rescaled diagonal solves a small least-squares problem
        np.testing.assert_allclose(to_numpy(f.weights), to_numpy(ref.weights), rtol=tol)
        np.testing.assert_allclose(to_numpy(g.weights), to_numpy(ref.weights), rtol=tol)
        scale = np.max(np.abs(ref_prod))
        np.testing.assert_allclose(prod, ref_prod, rtol=0, atol=tol * 10 * scale)


@pytest.mark.parametrize(("dtype", "scales"), SCALES)
def test_expected_error_is_scale_equivariant(xp, asarray, dtype, scales):
    X, Y = _data(dtype, seed=1)
    a, b = asarray(X, dtype=getattr(xp, dtype)), asarray(Y, dtype=getattr(xp, dtype))
    for kind in ("optimal", "uniform"):
        ref = float(cr_expected_error(a, b, 5, probabilities=kind))
        assert ref > 0
        for s in scales:
            sa = asarray(X * s, dtype=getattr(xp, dtype))
            sab = asarray(Y * s, dtype=getattr(xp, dtype))
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                got = float(cr_expected_error(sa, b, 5, probabilities=kind))
                both = float(cr_expected_error(sa, sab, 5, probabilities=kind))
            s2 = float(np.asarray(s, dtype=dtype)) ** 2  # the scale as the data saw it
            assert got / s2 == pytest.approx(ref, rel=1e3 * float(np.finfo(dtype).eps))
            true_both = math.log(ref) + 2 * math.log(s2)
            if true_both > math.log(np.finfo(np.float64).max):
                assert both == math.inf  # the float64 result itself overflows
            elif true_both < math.log(np.finfo(np.float64).smallest_normal):
                assert 0 <= both < np.finfo(np.float64).smallest_normal  # ... or underflows
            else:
                assert math.log(both) == pytest.approx(true_both, rel=1e-4)


def test_expected_error_zero_at_huge_entries_is_zero_not_nan():
    # equal outer products: optimal sampling is exact, E err = 0; entries 1e80 square to 1e160
    # and the formula's terms (‖x‖‖y‖)² to 1e320
    X, Y = np.full((3, 4), 1e80), np.full((4, 2), 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        err = float(cr_expected_error(X, Y, 2))
    scale = (np.sum(np.linalg.norm(X / 1e80, axis=0) * np.linalg.norm(Y, axis=1)) * 1e80) ** 2
    assert 0.0 <= err <= 100 * np.finfo(float).eps * scale
    tiny = np.full((3, 4), 1e-30, dtype=np.float32)
    assert float(cr_expected_error(tiny, np.eye(4, dtype=np.float32), 2)) > 0  # not underflowed


@pytest.mark.parametrize("kw", [{}, {"replace": False}, {"rescale": "diagonal"}])
def test_user_probabilities_on_every_backend(xp, asarray, kw):
    X, Y = _data("float64", seed=2)
    p = np.linspace(1.0, 2.0, 30)
    p /= p.sum()
    a, b, pa = asarray(X), asarray(Y), asarray(p)
    f = cr_factors(a, b, 7, probabilities=pa, rng=4, **kw)
    idx, lam = to_numpy(f.indices), to_numpy(f.weights)
    if kw.get("replace") is False:
        expected = 1 / ref_cr.inclusion_probabilities(p, 7)[idx]
    elif kw.get("rescale"):
        expected = ref_cr.diagonal_lstsq(X, Y, idx)
    else:
        expected = 1 / (7 * p[idx])
    np.testing.assert_allclose(lam, expected, rtol=1e-10)
    M = cr_matmul(a, b, 7, probabilities=pa, rng=4, **kw)
    np.testing.assert_allclose(to_numpy(f.C) @ to_numpy(f.R), (X[:, idx] * lam) @ Y[idx],
                               rtol=1e-10, atol=1e-12)
    assert tuple(M.shape) == (12, 9)
    err = float(cr_expected_error(a, b, 7, probabilities=pa))
    assert err == pytest.approx(ref_cr.expected_error_formula(X, Y, p, 7), rel=1e-12)


@pytest.mark.parametrize(
    ("sa", "sb"),
    [((0, 5, 6), (0, 6, 4)), ((2, 0, 6), (2, 6, 4)), ((5, 6), (6, 0)), ((0, 6), (6, 4)),
     ((3, 0, 6), (6, 0)), ((2, 3, 0), (1, 0, 4))],
)
@pytest.mark.parametrize("kw", METHODS)
def test_empty_batch_and_row_dimensions(xp, asarray, sa, sb, kw):
    a, b = asarray(np.ones(sa)), asarray(np.ones(sb))
    batch = np.broadcast_shapes(sa[:-2], sb[:-2])
    n, inner, m = sa[-2], sa[-1], sb[-1]
    k = 0 if inner == 0 else (min(4, inner) if kw.get("method") or "replace" in kw else 4)
    f = cr_factors(a, b, 4, rng=0, **kw)
    assert tuple(f.C.shape) == (*batch, n, k)
    assert tuple(f.R.shape) == (*batch, k, m)
    assert tuple(f.indices.shape) == tuple(f.weights.shape) == (*batch, k)
    M = cr_matmul(a, b, 4, rng=0, **kw)
    assert tuple(M.shape) == (*batch, n, m)
    np.testing.assert_array_equal(to_numpy(M), np.ones(sa) @ np.ones(sb))
    if not kw or kw.get("probabilities"):
        err = cr_expected_error(a, b, 4, **kw)
        assert tuple(err.shape) == batch
        assert np.all(to_numpy(err) == 0)
