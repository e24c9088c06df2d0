"""The guarded Gram-route kernel (BLAS aᵀa, checked Cholesky); also run with NUMBA_DISABLE_JIT=1.

Bounds from its error analysis (docs/theory/volume.md, "The guarded Gram route"): an
accepted result is within ½(γ_n + γ_{k+1})·s² of the exact log-volume of the given
data, s = Σ_j sqrt(G_jj (G⁻¹)_jj), and it is accepted iff s ≤ 2nk/(n+k+1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("numba")

from helpers import eps, matrix_with_spectrum
from lowrank.kernels import volume_gram_numba

SHAPES = [(40, 3), (24, 8), (100, 5), (120, 12)]  # the last: BLAS products


def run(a, take_log=True):
    out = np.full(a.shape[0], np.nan, dtype=a.dtype)
    ok = np.zeros(a.shape[0], dtype=bool)
    volume_gram_numba.gram_log_volume(a, out, ok, take_log)
    return out, ok


def exact_s_and_log(a):
    """s and the log-volume of each matrix, from float64 QR / inverse of the given values."""
    a64 = a.astype(np.float64)
    g = np.swapaxes(a64, -1, -2) @ a64
    d = np.diagonal(g, axis1=-2, axis2=-1)
    s = np.sum(np.sqrt(d * np.diagonal(np.linalg.inv(g), axis1=-2, axis2=-1)), axis=-1)
    r = np.linalg.qr(a64, mode="r")
    return s, np.sum(np.log(np.abs(np.diagonal(r, axis1=-2, axis2=-1))), axis=-1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_accepted_results_meet_the_gram_bound(shape, dtype):
    n, k = shape
    # 11 matrices: a full 8-matrix lane block and a partial one
    a = np.random.default_rng(n + k).standard_normal((11, n, k)).astype(dtype)
    got, ok = run(a)
    s, ref = exact_s_and_log(a)
    limit = volume_gram_numba.acceptance_limit(n, k)
    clear = np.abs(s - limit) > 1e-6 * limit  # the computed s decides at the boundary
    np.testing.assert_array_equal(ok[clear], (s <= limit)[clear])
    assert ok.sum() >= 8  # Gaussian columns this tall are near-orthogonal
    u = eps(np.dtype(dtype).name) / 2
    # the bound of the route, plus the float64 QR reference's own γ_{nk}·s and the logs
    bound = 0.5 * (n + k + 1) * u * s**2 + n * k * eps("float64") * s + 4 * eps("float64") * (
        1 + np.abs(ref))
    assert np.all(np.abs(got[ok].astype(np.float64) - ref[ok]) <= bound[ok])


@pytest.mark.parametrize("kappa", [1e3, 1e8])
def test_ill_conditioned_matrices_are_rejected(kappa):
    mats = [matrix_with_spectrum(30, 4, np.geomspace(1, 1 / kappa, 4), seed=i) for i in range(9)]
    _, ok = run(np.stack(mats))
    assert not ok.any()


def test_orthogonal_columns_give_s_equal_k_and_are_accepted():
    q = np.stack([matrix_with_spectrum(12, 5, np.ones(5), seed=i) for i in range(3)])
    scales = np.array([1.0, 3.0, 0.25, 8.0, 1e-3])  # column scaling leaves s = k
    got, ok = run(q * scales)
    assert ok.all()
    np.testing.assert_allclose(got, np.sum(np.log(scales)), rtol=0, atol=60 * eps("float64"))


@pytest.mark.parametrize("shape", [(30, 4), (120, 12)])  # float64 product here / BLAS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_zero_columns_and_extreme_scales(dtype, shape):
    in_kernel = shape[0] * shape[1] ** 2 <= volume_gram_numba.PRODUCT_MAX_NK2
    tiny, huge = (1e-20, 1e20) if dtype == np.float32 else (1e-150, 1e150)
    a = np.random.default_rng(7).standard_normal((7, *shape)).astype(dtype)
    a[0, 3, 1] = np.nan
    a[1, 0, 2] = np.inf
    a[2, :, 3] = 0.0
    a[3] *= tiny  # squares underflow float32 and float64
    a[4] *= huge  # squares overflow them
    a[5, :, 0] = a[5, :, 1]  # exactly dependent columns
    got, ok = run(a)
    assert not ok[[0, 1, 2, 5]].any()
    assert ok[6]
    if dtype == np.float32 and in_kernel:
        # a float64 product of float32 data cannot leave float64's range: accepted, and
        # as accurate as at unit scale (the result is rounded to float32)
        assert ok[3] and ok[4]
        _, ref = exact_s_and_log(a[3:5])
        np.testing.assert_allclose(got[3:5].astype(np.float64), ref,
                                   rtol=4 * eps("float32"), atol=0)
    else:
        assert not ok[3:5].any()


def test_volume_and_log_agree_and_product_leaves_the_normal_range():
    a = np.random.default_rng(8).standard_normal((9, 40, 8))
    a[1] *= 1e45  # R_jj ~ 1e46: their product (1e370) overflows, the log does not
    logs, ok = run(a, True)
    vols, ok2 = run(a, False)
    assert ok.all()
    np.testing.assert_array_equal(ok, ok2)
    _, ref = exact_s_and_log(a)
    np.testing.assert_allclose(logs, ref, rtol=1e-12)
    assert vols[1] == math.inf
    keep = np.arange(9) != 1
    np.testing.assert_allclose(vols[keep], np.exp(ref[keep]), rtol=1e-12)


def test_any_strides_and_no_mutation():
    base = np.random.default_rng(9).standard_normal((10, 8, 50))
    keep = base.copy()
    view = np.swapaxes(base, 1, 2)[:, ::2, 1:7]  # (10, 25, 6), non-contiguous
    got, ok = run(view)
    ref, ok_ref = run(np.ascontiguousarray(view))
    np.testing.assert_array_equal(ok, ok_ref)
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-13)
    np.testing.assert_array_equal(base, keep)


def test_parallel_path_matches_serial(monkeypatch):
    a = np.random.default_rng(10).standard_normal((45, 20, 4))
    a[3] = matrix_with_spectrum(20, 4, [1, 1e-2, 1e-4, 1e-6], seed=1)  # rejected inside a block
    serial = run(a)
    monkeypatch.setattr(volume_gram_numba, "_SERIAL_FLOPS", 0)
    monkeypatch.setattr(volume_gram_numba, "n_workers", lambda: 64)
    parallel = run(a)
    np.testing.assert_array_equal(parallel[1], serial[1])
    np.testing.assert_array_equal(parallel[0][serial[1]], serial[0][serial[1]])
    assert not serial[1][3]


def test_empty_batch():
    out, ok = run(np.empty((0, 9, 3)))
    assert out.shape == ok.shape == (0,)


@pytest.mark.parametrize("shape", [(40, 3), (24, 8), (512, 8), (120, 12)])  # kernel/BLAS products
@pytest.mark.parametrize("batch", [1, 3, 8, 13])  # partial blocks: one matrix at a time
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plan_matches_the_per_call_kernel_and_counts_rejections(shape, batch, dtype):
    a = np.random.default_rng(batch).standard_normal((batch, *shape)).astype(dtype)
    a[0] = matrix_with_spectrum(*shape, np.geomspace(1, 1e-7, shape[1]), seed=2)  # rejected
    out, ok = run(a)
    plan = volume_gram_numba.gram_log_volume_plan(a.shape, a.dtype, True)
    out2 = np.full(batch, np.nan, dtype=dtype)
    ok2 = np.zeros(batch, dtype=bool)
    rejected = plan(a, out2, ok2)
    np.testing.assert_array_equal(ok2, ok)
    np.testing.assert_array_equal(out2[ok], out[ok])
    assert rejected == batch - ok.sum() and not ok[0]
    _, ref = exact_s_and_log(a)
    bound = 0.5 * (shape[0] + shape[1] + 1) * eps(np.dtype(dtype).name) * 16 * shape[1] ** 2
    assert np.all(np.abs(out2[ok2].astype(np.float64) - ref[ok2]) <= bound)


def test_partial_blocks_agree_with_lane_blocks():
    # the same matrices factored one at a time (a block of 3) and in a full lane block
    a = np.random.default_rng(11).standard_normal((11, 60, 6))
    out, ok = run(a)  # blocks of 8 (lanes) and 3 (one at a time)
    again, ok2 = run(np.concatenate([a[8:], a[:8]]))  # blocks of 8 and 3, swapped roles
    assert ok.all() and ok2.all()
    np.testing.assert_allclose(again[:3], out[8:], rtol=1e-13)
    np.testing.assert_allclose(again[3:], out[:8], rtol=1e-13)
