"""Scale equivariance: results for c·a are c times those for a, over the dtype's range.

Squaring ``‖a‖_F`` (or a Gram matrix) in working precision over/underflows long before
``a`` does: 1e±150 in float64 and 1e±18 in float32 are finite, with finite squares of the
entries only for the former, so every routine must scale internally. No RuntimeWarning may
escape (the suite turns warnings into errors).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import matrix_with_spectrum, to_numpy

import lowrank

SCALES = {"float64": (1e-150, 1e150, 1e-170, 1e155), "float32": (1e-18, 1e18, 1e-25, 1e20)}
SPECTRUM = 0.8 ** np.arange(30)


def _base(dtype):
    return matrix_with_spectrum(50, 30, SPECTRUM, seed=7).astype(dtype)


def _tol(dtype):
    # relative perturbation of a well-conditioned (σ_1/σ_k <= 0.8^-12 ≈ 15) problem:
    # a few hundred eps, whatever the scale
    return 500 * float(np.finfo(dtype).eps) * 15


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("mode", [{"rtol": 0.05}, {"rank": 8}])
def test_svd_approx_scale_equivariant(dtype, mode):
    a = _base(dtype)
    ref = lowrank.svd_approx(a, rng=0, **mode)
    for c in SCALES[dtype]:
        res = lowrank.svd_approx((a * c).astype(dtype), rng=0, **mode)
        assert res.rank == ref.rank
        assert res.S.dtype == np.dtype(dtype)
        s = res.S.astype(np.float64) / c
        assert np.allclose(s, ref.S, rtol=_tol(dtype), atol=0)
        assert res.error_estimate == pytest.approx(ref.error_estimate, rel=0.05)
        assert res.error_estimate > 0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_truncated_svd_pinv_optimal_factor_scale_equivariant(dtype):
    a = _base(dtype)
    s_ref = to_numpy(lowrank.truncated_svd(a, 8).S)
    p_ref = to_numpy(lowrank.pinv(a))
    for c in SCALES[dtype][:2]:
        ac = (a * c).astype(dtype)
        s = to_numpy(lowrank.truncated_svd(ac, 8).S).astype(np.float64) / c
        assert np.allclose(s, s_ref, rtol=_tol(dtype), atol=0)
        p = to_numpy(lowrank.pinv(ac)).astype(np.float64) * c
        assert np.allclose(p, p_ref, rtol=_tol(dtype), atol=_tol(dtype) * np.abs(p_ref).max())


@pytest.mark.parametrize("c", [1e-170, 1e155])
def test_svd_approx_sparse_scale_equivariant(c):
    sp = pytest.importorskip("scipy.sparse")
    d = _base("float64")
    d[np.abs(d) < 0.05] = 0.0
    ref = lowrank.svd_approx(sp.csr_array(d), rtol=0.05, rng=0)
    res = lowrank.svd_approx(sp.coo_array(d * c), rtol=0.05, rng=0)
    assert res.rank == ref.rank
    assert np.allclose(res.S / c, ref.S, rtol=_tol("float64"), atol=0)
    assert res.error_estimate == pytest.approx(ref.error_estimate, rel=1e-6)
