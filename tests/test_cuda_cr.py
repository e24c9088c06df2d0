"""CR GPU kernels (numba-cuda) under the CUDA simulator or on a real GPU, against NumPy."""

from __future__ import annotations

import array_api_compat.numpy as npx
import numpy as np
import pytest
from cuda_helpers import require_cuda_or_sim

SIM = require_cuda_or_sim()

from cuda_helpers import device_array, host  # noqa: E402
from lowrank.kernels import cr_cuda  # noqa: E402

from lowrank._agnostic import _cr as agn  # noqa: E402


def _on_device(a, b, order):
    """Inputs in their layout: NumPy under the simulator, CuPy on a GPU."""
    if SIM:
        return a, b
    import cupy

    return cupy.asarray(a, order=order), cupy.asarray(b, order=order)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_norms_match_agnostic(order, dtype):
    rng = np.random.default_rng(0)
    a = np.asarray(rng.standard_normal((5, 9)), dtype=dtype, order=order)
    b = np.asarray(rng.standard_normal((9, 7)), dtype=dtype, order=order)
    na, nb = device_array(np.zeros(9, dtype)), device_array(np.zeros(9, dtype))
    cr_cuda.cr_norms(*_on_device(a, b, order), na, nb, threads_per_block=8)
    ra, rb = agn.norms(a, b, npx)
    rtol = 20 * np.finfo(dtype).eps
    np.testing.assert_allclose(host(na), ra, rtol=rtol)
    np.testing.assert_allclose(host(nb), rb, rtol=rtol)


@pytest.mark.parametrize("order", ["C", "F"])
def test_gather_scale_matches_agnostic(order):
    rng = np.random.default_rng(1)
    a = np.asarray(rng.standard_normal((6, 8)), order=order)
    b = np.asarray(rng.standard_normal((8, 5)), order=order)
    idx = np.array([0, 3, 3, 7], dtype=np.int64)
    col, row = rng.standard_normal(4), rng.random(4)
    C, R = device_array(np.zeros((6, 4))), device_array(np.zeros((4, 5)))
    cr_cuda.cr_gather_scale(
        *_on_device(a, b, order),
        device_array(idx),
        device_array(col),
        device_array(row),
        C,
        R,
        threads_per_block=8,
    )
    C0, R0 = agn.gather_scale(a, b, idx, col, row, npx)
    np.testing.assert_allclose(host(C), C0, rtol=1e-15)
    np.testing.assert_allclose(host(R), R0, rtol=1e-15)
