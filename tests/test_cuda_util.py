"""GPU kernels of the dispatch self-test, under the CUDA simulator or on a real GPU."""

from __future__ import annotations

import numpy as np
from cuda_helpers import require_cuda_or_sim

SIM = require_cuda_or_sim()

from cuda_helpers import device_array, host  # noqa: E402
from lowrank.kernels import util_cuda  # noqa: E402


def test_axpy_matches_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(70), rng.standard_normal(70)
    out = device_array(np.zeros(70))
    util_cuda.axpy(0.5, device_array(x), device_array(y), out, threads_per_block=8)
    np.testing.assert_allclose(host(out), 0.5 * x + y, rtol=1e-15)
