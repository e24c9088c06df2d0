"""The one-matrix Gram-route kernel (float64 or BLAS product, checked Cholesky); also run
with NUMBA_DISABLE_JIT=1.

Bounds from its error analysis (docs/theory/volume.md, "The guarded Gram route"): an
accepted result is within ½(γ_n + γ_{k+1})·s² of the exact log-volume of the given data,
s = Σ_j sqrt(G_jj (G⁻¹)_jj), and it is accepted iff s ≤ 2nk/(n+k+1). A rejected matrix
comes back NaN.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("numba")

from helpers import eps, matrix_with_spectrum
from lowrank.kernels import volume_gram_single_numba as single

# below and above PRODUCT_MAX_NK2: the kernel's own float64 product / BLAS in a's precision
SHAPES = [(24, 8), (64, 8), (300, 16), (128, 32)]


def one(a, take_log=True):
    return single.gram_log_volume_one(a, take_log)


def exact_s_and_log(m):
    """s and the log-volume of one matrix, from float64 QR / inverse of the given values."""
    m64 = m.astype(np.float64)
    g = m64.T @ m64
    s = float(np.sum(np.sqrt(np.diag(g) * np.diag(np.linalg.inv(g)))))
    r = np.linalg.qr(m64, mode="r")
    return s, float(np.sum(np.log(np.abs(np.diag(r)))))


def test_shapes_cover_both_products():
    kinds = {n * k * k <= single.PRODUCT_MAX_NK2 for n, k in SHAPES}
    assert kinds == {True, False}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_accepted_results_meet_the_gram_bound(shape, dtype):
    n, k = shape
    limit = single.acceptance_limit(n, k)
    u = eps(np.dtype(dtype).name) / 2
    accepted = 0
    # Gaussian (near-orthogonal) columns and mildly ill-conditioned ones around the limit
    mats = [np.random.default_rng(i).standard_normal(shape) for i in range(6)]
    mats += [matrix_with_spectrum(n, k, np.geomspace(1, 1 / kap, k), seed=i)
             for i, kap in enumerate([1.5, 3.0, 10.0])]
    for m in mats:
        m = m.astype(dtype)
        got = one(m)
        s, ref = exact_s_and_log(m)
        if abs(s - limit) > 1e-6 * limit:  # the computed s decides at the boundary
            assert (got == got) == (s <= limit), (s, limit)
        if got == got:
            accepted += 1
            bound = (0.5 * (n + k + 1) * u * s**2 + n * k * eps("float64") * s
                     + 4 * eps("float64") * (1 + abs(ref)))
            assert abs(got - ref) <= bound
    assert accepted >= 6  # the Gaussian ones


@pytest.mark.parametrize("kappa", [1e3, 1e8, 1e14])
@pytest.mark.parametrize("shape", [(64, 8), (300, 16)])
def test_ill_conditioned_matrices_are_rejected(kappa, shape):
    for i in range(3):
        m = matrix_with_spectrum(*shape, np.geomspace(1, 1 / kappa, shape[1]), seed=i)
        assert math.isnan(one(m))


@pytest.mark.parametrize("shape", [(64, 8), (300, 16)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rank_deficient_nonfinite_and_out_of_range_are_rejected(shape, dtype):
    in_kernel = shape[0] * shape[1] ** 2 <= single.PRODUCT_MAX_NK2
    base = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    cases = []
    for col, value in [(0, np.nan), (2, np.inf), (1, -np.inf)]:
        m = base.copy()
        m[5, col] = value
        cases.append(m)
    dependent = base.copy()
    dependent[:, 3] = 2 * dependent[:, 1] - dependent[:, 0]
    zero = base.copy()
    zero[:, -1] = 0
    low_rank = (base[:, :2] @ base[:2, :]).astype(dtype)  # rank 2 < k
    cases += [dependent, zero, low_rank]
    if dtype == np.float64 or not in_kernel:  # squares leave the product's range
        tiny, huge = (1e-150, 1e150) if dtype == np.float64 else (1e-18, 1e18)
        cases += [base * tiny, base * huge]
    for m in cases:
        assert math.isnan(one(m))
    assert not math.isnan(one(base))


def test_float32_extreme_scales_through_the_float64_product():
    m = np.random.default_rng(4).standard_normal((64, 8))
    for scale in (1e-18, 1e18, 1e-30, 1e30):
        a = (m * scale).astype(np.float32)  # squares under/overflow float32, not float64
        _, ref = exact_s_and_log(a)
        got = one(a)
        assert abs(got - ref) <= 4 * eps("float64") * abs(ref) + 1e-12


def test_volume_and_log_agree_and_product_leaves_the_normal_range():
    m = np.random.default_rng(8).standard_normal((300, 16))
    _, ref = exact_s_and_log(m)
    np.testing.assert_allclose(one(m, False), math.exp(ref), rtol=1e-12)
    big = m * 1e20  # R_jj ~ 2e21: their product (1e341) overflows, the log does not
    _, ref_big = exact_s_and_log(big)
    assert one(big, False) == math.inf
    np.testing.assert_allclose(one(big), ref_big, rtol=1e-13)
    small = np.random.default_rng(9).standard_normal((64, 8)) * 1e-40  # product 1e-310
    _, ref_small = exact_s_and_log(small)
    np.testing.assert_allclose(one(small), ref_small, rtol=1e-13)
    np.testing.assert_allclose(one(small, False), math.exp(ref_small), rtol=1e-10)


@pytest.mark.parametrize("shape", [(64, 8), (300, 16)])
def test_any_strides_and_no_mutation(shape):
    base = np.random.default_rng(9).standard_normal((shape[1] + 3, 2 * shape[0]))
    keep = base.copy()
    view = base.T[::2, 1:shape[1] + 1]  # non-contiguous
    assert one(view) == one(np.ascontiguousarray(view))
    np.testing.assert_array_equal(base, keep)
