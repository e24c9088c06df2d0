"""Shared set-up for GPU-kernel tests (tests/test_cuda_*.py).

Usage at the top of a test module::

    from cuda_helpers import require_cuda_or_sim
    SIM = require_cuda_or_sim()   # skips the module when neither is available
    from cuda_helpers import device_array, host
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from lowrank.kernels._probe import gpu_available

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def require_cuda_or_sim() -> bool:
    """Skip the calling module unless the CUDA simulator is on or a GPU is present."""
    if not SIM and not gpu_available():
        pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 or a CUDA GPU", allow_module_level=True)
    return SIM


def device_array(x):
    """NumPy (C-contiguous) under the simulator, CuPy on a real GPU."""
    if SIM:
        return np.ascontiguousarray(x)
    import cupy

    return cupy.asarray(x)


def host(x):
    return x if isinstance(x, np.ndarray) else x.get()
