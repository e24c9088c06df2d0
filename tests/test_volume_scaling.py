"""Gram volumes over the whole finite range: exact logs, and inf/0 only where the truth is."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from helpers import to_numpy

import lowrank

SHAPES = [(5, 3, 2), (4, 6, 3), (3, 40, 20), (2, 70, 40), (3, 8, 12)]
SCALES = {"float64": (1e150, 1e-150, 2.0**600), "float32": (1e18, 1e-18)}


def _truth(a):
    """Σ log σ_i of the min(n, k) singular values, from an SVD of a·2^-e (exact scaling)."""
    a = np.asarray(a, dtype=np.float64)
    e = math.frexp(float(np.max(np.abs(a))))[1]
    s = np.linalg.svd(np.ldexp(a, -e), compute_uv=False)
    return np.sum(np.log(s), axis=-1) + s.shape[-1] * e * math.log(2)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_volumes_at_extreme_scales(xp, asarray, use_kernels, shape, dtype):
    rng = np.random.default_rng(sum(shape))
    base = rng.standard_normal(shape).astype(dtype)
    n, k = shape[-2:]
    eps = float(np.finfo(dtype).eps)
    info = np.finfo(dtype)
    for s in SCALES[dtype]:
        host = (base * np.asarray(s, dtype=dtype)).astype(dtype)
        a = asarray(host, dtype=getattr(xp, dtype))
        truth = _truth(host)  # log of the product of min(n, k) singular values
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            logs = to_numpy(lowrank.log_nonsquare_det(a)).astype(float)
            dets = to_numpy(lowrank.nonsquare_det(a)).astype(float)
            log_vol = to_numpy(lowrank.log_gram_volume(a)).astype(float)
            vol = to_numpy(lowrank.gram_volume(a)).astype(float)
        tol = 10 * n * k * eps * np.maximum(1.0, np.abs(truth))  # QR: ~ n·eps per column
        np.testing.assert_allclose(logs, truth, rtol=0, atol=float(np.max(tol)))
        if n >= k:
            np.testing.assert_allclose(log_vol, truth, rtol=0, atol=float(np.max(tol)))
            np.testing.assert_allclose(vol, dets, rtol=0, atol=0)
        else:
            assert np.all(log_vol == -np.inf) and np.all(vol == 0)
        for got, t in zip(dets, truth, strict=True):
            if t > math.log(float(info.max)):
                assert got == math.inf  # the true value overflows the dtype
            elif t < math.log(float(info.smallest_normal)):
                assert 0 <= got < float(info.smallest_normal)  # ... or underflows
            else:
                assert math.log(got) == pytest.approx(t, abs=float(np.max(tol)) + 1e-6)


def test_mixed_huge_and_tiny_columns_have_a_finite_volume(xp, asarray, use_kernels):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((6, 7, 4))
    scaled = base * np.array([1e150, 1e-150, 1e150, 1e-150])  # volume ~ product of 1s
    a = asarray(scaled)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vol = to_numpy(lowrank.gram_volume(a))
    ref = np.prod(np.linalg.svd(base, compute_uv=False), axis=-1)
    np.testing.assert_allclose(vol, ref, rtol=1e-12)


def test_float16_volume_saturates_to_inf_without_warning():
    """A float16 volume beyond float16's range is inf, with no cast warning (suite: -W error)."""
    a = np.random.default_rng(3).standard_normal((30, 10)) * 8.0
    expected = np.prod(np.linalg.svd(a, compute_uv=False))  # about 1e15, far above 65504
    assert expected > np.finfo(np.float16).max
    got = lowrank.gram_volume(a.astype(np.float16))
    assert got.dtype == np.float16 and np.isinf(got) and got > 0
    small = a[:, :2] / 8.0  # a volume float16 can hold keeps its value
    vol = lowrank.gram_volume(small.astype(np.float16))
    ref = np.prod(np.linalg.svd(small.astype(np.float16).astype(np.float64), compute_uv=False))
    np.testing.assert_allclose(float(vol), ref, rtol=4 * float(np.finfo(np.float16).eps))
