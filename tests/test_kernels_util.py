"""Every CPU (numba) kernel against its array-API twin on NumPy.

CI runs this file a second time with NUMBA_DISABLE_JIT=1 so kernel bodies run as Python.
Topic-specific kernel tests live in tests/test_kernels_<topic>.py files imported here.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from lowrank.kernels import util_numba


def test_axpy_matches_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(17), rng.standard_normal(17)
    out = np.empty(17)
    util_numba.axpy(0.5, x, y, out)
    np.testing.assert_allclose(out, 0.5 * x + y, rtol=1e-15)
