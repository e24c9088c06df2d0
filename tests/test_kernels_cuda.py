"""GPU (numba-cuda) kernels: under NUMBA_ENABLE_CUDASIM=1 on small NumPy arrays, or on a
real GPU on CuPy arrays. Skips at module level when neither holds."""

from __future__ import annotations

import os

import numpy as np
import pytest

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
if not SIM:
    try:
        import cupy

        HAVE_GPU = bool(cupy.cuda.is_available())
    except Exception:  # ImportError or CUDARuntimeError: no GPU backend
        HAVE_GPU = False
    if not HAVE_GPU:
        pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 or a CUDA GPU", allow_module_level=True)

from lowrank.kernels import util_cuda  # noqa: E402


def device_array(x):
    """NumPy under the simulator, CuPy on a real GPU."""
    if SIM:
        return np.ascontiguousarray(x)
    import cupy

    return cupy.asarray(x)


def host(x):
    return x if isinstance(x, np.ndarray) else x.get()


def test_axpy_matches_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(70), rng.standard_normal(70)
    out = device_array(np.zeros(70))
    util_cuda.axpy(0.5, device_array(x), device_array(y), out, threads_per_block=8)
    np.testing.assert_allclose(host(out), 0.5 * x + y, rtol=1e-15)
