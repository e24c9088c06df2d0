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
