"""The numba-cuda Gram-volume kernel against NumPy (CUDA simulator in CI, or a real GPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cuda_helpers import require_cuda_or_sim

SIM = require_cuda_or_sim()

from cuda_helpers import device_array, host  # noqa: E402
from lowrank.kernels import volume_cuda  # noqa: E402

from lowrank._agnostic import _volume as agnostic  # noqa: E402


def run(a, take_log, dtype=np.float64):
    out = device_array(np.zeros(a.shape[0], dtype=dtype))
    volume_cuda.log_gram_volume(device_array(a), out, take_log, threads_per_block=4)
    return host(out)


@pytest.mark.parametrize("shape", [(3, 2), (4, 2), (3, 1), (5, 3), (4, 4)])
def test_matches_numpy(shape):
    a = np.random.default_rng(sum(shape)).standard_normal((6, *shape))
    np.testing.assert_allclose(run(a, True), agnostic.log_gram_volume(a, np), rtol=1e-12)
    np.testing.assert_allclose(run(a, False), agnostic.gram_volume(a, np), rtol=1e-12)


def test_float32_output():
    a = np.random.default_rng(1).standard_normal((5, 4, 2)).astype(np.float32)
    got = run(a, False, dtype=np.float32)
    np.testing.assert_allclose(got, agnostic.gram_volume(a.astype(np.float64), np), rtol=1e-6)


def test_extremes_zero_columns_and_nan():
    q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((3, 2)))
    a = np.stack([q * 1e200, q * 1e-200, q, q, q])
    a[3, :, 1] = 0.0
    a[4, 1, 0] = np.nan
    logs = run(a, True)
    np.testing.assert_allclose(logs[:3], [2 * math.log(1e200), 2 * math.log(1e-200), 0.0],
                               rtol=1e-13, atol=1e-13)
    assert logs[3] == -math.inf
    assert math.isnan(logs[4])
    vols = run(a, False)
    assert vols[0] == math.inf
    assert vols[1] == 0.0
    assert vols[3] == 0.0
