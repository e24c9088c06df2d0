"""Gram volumes through the guarded Gram route: accuracy against mpmath whatever the conditioning."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from helpers import eps, matrix_with_spectrum
from ref_volume import mp_log_volume

import lowrank
from lowrank import _volume

pytest.importorskip("numba")

# route shapes: inside the Householder kernel's range (its fallback), and beyond it (LAPACK)
SHAPES = [(64, 8), (120, 24), (520, 8)]


@functools.cache
def mixed_batch(dtype_name, n, k):
    """κ from 1 to 1/(100·n·eps), near-orthogonal Gaussians between them, mpmath logs."""
    kappas = np.geomspace(1.0, 1.0 / (100 * n * eps(dtype_name)), 5)
    rng = np.random.default_rng(n * k)
    mats = []
    for i, kap in enumerate(kappas):
        mats.append(matrix_with_spectrum(n, k, np.geomspace(1.0, 1.0 / kap, k), seed=i))
        mats.append(rng.standard_normal((n, k)))
    batch = np.stack(mats).astype(dtype_name)
    ref = np.array([mp_log_volume(m.astype(np.float64), dps=40) for m in batch])
    s = np.linalg.svd(batch.astype(np.float64), compute_uv=False)
    return batch, s[:, 0] / s[:, -1], ref


@pytest.mark.parametrize(("n", "k"), SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_accuracy_within_10_n_eps_kappa(n, k, dtype):
    batch, kappa, ref = mixed_batch(dtype, n, k)
    assert _volume._use_gram(batch, "numba") is not None  # this shape takes the Gram route
    got = lowrank.log_gram_volume(batch).astype(np.float64)
    assert np.all(np.abs(got - ref) <= 10 * n * eps(dtype) * kappa)
    vol = lowrank.gram_volume(batch).astype(np.float64)
    assert np.all(np.abs(np.log(vol) - ref) <= 10 * n * eps(dtype) * kappa + 2 * eps(dtype))


def test_rejected_matrices_are_redone_by_qr():
    # κ = 1e8 in float64: the Gram route's error would be ~eps·κ² (noise); QR's ~eps·κ
    a = np.stack([matrix_with_spectrum(80, 8, np.geomspace(1, 1e-8, 8), seed=i)
                  for i in range(3)])
    ref = np.array([mp_log_volume(m) for m in a])
    got = lowrank.log_gram_volume(a)
    assert np.all(np.abs(got - ref) <= 10 * 80 * eps("float64") * 1e8)
    gram = np.linalg.slogdet(np.swapaxes(a, -1, -2) @ a)[1] / 2
    assert np.max(np.abs(gram - ref)) > 100 * np.max(np.abs(got - ref))


@pytest.mark.parametrize("shape", [(64, 8), (520, 8)])
def test_nan_zero_column_and_extreme_scales(shape):
    a = np.random.default_rng(3).standard_normal((6, *shape))
    q = matrix_with_spectrum(*shape, np.ones(shape[1]), seed=4)
    a[1, :, 2] = 0.0
    a[2], a[3] = q * 1e-170, q * 1e200  # squares under-/overflow: the QR path's scaling
    bad = a.copy()
    bad[4, 5, 1] = np.nan
    with pytest.raises(ValueError, match="`a` contains NaN or Inf"):
        lowrank.log_gram_volume(bad)
    out = lowrank.log_gram_volume(bad, check_finite=False)
    assert np.isnan(out[4])
    assert np.isfinite(out[[0, 2, 3, 5]]).all()
    assert out[1] == -math.inf
    k = shape[1]
    assert out[2] == pytest.approx(k * math.log(1e-170), rel=1e-13)
    assert out[3] == pytest.approx(k * math.log(1e200), rel=1e-13)


def test_float32_strided_input_not_mutated():
    base = np.random.default_rng(5).standard_normal((4, 16, 200)).astype(np.float32)
    keep = base.copy()
    view = np.swapaxes(base, 1, 2)[:, ::2]  # (4, 100, 16), non-contiguous
    got = lowrank.log_gram_volume(view)
    assert got.dtype == np.float32
    # the same products in the same order, whatever the strides
    np.testing.assert_array_equal(got, lowrank.log_gram_volume(np.ascontiguousarray(view)))
    np.testing.assert_array_equal(base, keep)


# --- single matrices and small batches (the one-matrix kernel) --------------------------

ONE_SHAPES = [(64, 8), (520, 8), (300, 16)]  # float64 product in the kernel / BLAS


@pytest.mark.parametrize(("n", "k"), ONE_SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_single_matrices_within_10_n_eps_kappa(n, k, dtype):
    batch, kappa, ref = mixed_batch(dtype, n, k)
    for m, kap, r in zip(batch, kappa, ref, strict=True):
        got = lowrank.log_gram_volume(m)
        assert got.shape == () and got.dtype == np.dtype(dtype)
        assert abs(float(got) - r) <= 10 * n * eps(dtype) * kap
        vol = float(lowrank.gram_volume(m))
        assert abs(math.log(vol) - r) <= 10 * n * eps(dtype) * kap + 2 * eps(dtype)
    # small batches (factored one matrix at a time, products by BLAS or the kernel) meet
    # the same bound
    for size in (2, 3, 5):
        got = lowrank.log_gram_volume(batch[:size])
        assert got.dtype == np.dtype(dtype)
        assert np.all(np.abs(got.astype(np.float64) - ref[:size])
                      <= 10 * n * eps(dtype) * kappa[:size])


@pytest.mark.parametrize("shape", ONE_SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_single_matrix_rank_deficient_and_extreme_scales(shape, dtype):
    n, k = shape
    q = matrix_with_spectrum(n, k, np.ones(k), seed=4)
    scales = (1e-150, 1e150) if dtype == "float64" else (1e-18, 1e18)
    for scale in scales:
        got = lowrank.log_gram_volume((q * scale).astype(dtype))
        assert float(got) == pytest.approx(k * math.log(scale), rel=20 * eps(dtype))
    zero = q.copy()
    zero[:, 1] = 0.0  # rank k - 1: the Cholesky breaks down, QR gives R_22 = 0
    assert lowrank.log_gram_volume(zero.astype(dtype)) == -math.inf
    assert lowrank.gram_volume(zero.astype(dtype)) == 0.0
    ill = matrix_with_spectrum(n, k, np.geomspace(1, 1e-6 if dtype == "float64" else 1e-3, k),
                               seed=5)
    assert float(lowrank.log_gram_volume(ill.astype(dtype))) == pytest.approx(
        mp_log_volume(ill.astype(dtype).astype(np.float64)), abs=10 * n * eps(dtype) * 1e6)


@pytest.mark.parametrize("shape", [(64, 8), (300, 16), (3, 64, 8)])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_single_matrices_and_small_batches_refuse_nan_inf(shape, value):
    a = np.random.default_rng(6).standard_normal(shape)
    a[..., 7, 2] = value
    for fn in (lowrank.gram_volume, lowrank.log_gram_volume):
        with pytest.raises(ValueError, match="`a` contains NaN or Inf"):
            fn(a)
        out = fn(a, check_finite=False)
        assert np.isnan(out).all()


def test_float32_volume_beyond_its_range_is_inf_without_warning():
    a = np.random.default_rng(7).standard_normal((512, 64)).astype(np.float32) * 10
    assert lowrank.gram_volume(a) == np.float32(np.inf)  # 1e150: no float32 (a warning fails)
    assert np.isfinite(lowrank.log_gram_volume(a))


def test_fast_path_respects_use_kernels(monkeypatch):
    a = np.random.default_rng(8).standard_normal((64, 8))
    expect = lowrank.log_gram_volume(a)

    def no_kernels(op):
        raise AssertionError(f"kernel {op} used with use_kernels=False")

    monkeypatch.setattr(_volume, "_numba_kernel", no_kernels)
    with lowrank.config_context(use_kernels=False):
        got = lowrank.log_gram_volume(a)
        assert lowrank.log_gram_volume(a[None]).shape == (1,)
    assert abs(float(got) - float(expect)) <= 100 * eps("float64")
