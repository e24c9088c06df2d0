"""CR CPU kernels (numba) against their array-API twins on NumPy.

CI also runs this file with NUMBA_DISABLE_JIT=1, so the kernel bodies run as Python.
"""

from __future__ import annotations

import array_api_compat.numpy as npx
import numpy as np
import pytest

pytest.importorskip("numba")

from lowrank.kernels import cr_numba

import lowrank
from lowrank import cr_factors, cr_matmul
from lowrank._agnostic import _cr as agn

# layouts x dtypes kept small: every pair is a separate numba compilation in CI
LAYOUTS = [("C", np.float32), ("C", np.float64), ("F", np.float32), ("strided", np.float64)]
SHAPES = [(7, 11, 5), (1, 1, 1), (40, 9, 300), (130, 70, 3)]


@pytest.fixture(params=["serial", "parallel"], autouse=True)
def build(request, monkeypatch):
    """Run every kernel test with the serial and the parallel numba builds."""
    monkeypatch.setattr(cr_numba, "_PARALLEL_MIN", 10**12 if request.param == "serial" else 0)
    return request.param


def _layout(x, order):
    if order == "C":
        return np.ascontiguousarray(x)
    if order == "F":
        return np.asfortranarray(x)
    return np.asarray(np.repeat(x, 2, axis=1)[:, ::2])  # strided, neither C nor F


@pytest.mark.parametrize(("order", "dtype"), LAYOUTS)
@pytest.mark.parametrize(("n", "inner", "m"), SHAPES)
def test_norms_match_agnostic(order, dtype, n, inner, m):
    rng = np.random.default_rng(n + inner)
    a = _layout(rng.standard_normal((n, inner)).astype(dtype), order)
    b = _layout(rng.standard_normal((inner, m)).astype(dtype), order)
    na, nb = np.full(inner, np.nan, dtype), np.full(inner, np.nan, dtype)
    cr_numba.cr_norms(a, b, na, nb)
    ra, rb = agn.norms(a, b, npx)
    rtol = 50 * np.finfo(dtype).eps * np.sqrt(max(n, m))
    np.testing.assert_allclose(na, ra, rtol=rtol)
    np.testing.assert_allclose(nb, rb, rtol=rtol)
    one = np.full(inner, np.nan, dtype)
    cr_numba.cr_norms(None, b, None, one)  # one-sided: the other input is not read
    np.testing.assert_array_equal(one, nb)


@pytest.mark.parametrize(("order", "dtype"), LAYOUTS)
@pytest.mark.parametrize(("n", "inner", "m"), SHAPES)
def test_gather_scale_matches_agnostic(order, dtype, n, inner, m):
    rng = np.random.default_rng(n * inner)
    a = _layout(rng.standard_normal((n, inner)).astype(dtype), order)
    b = _layout(rng.standard_normal((inner, m)).astype(dtype), order)
    r = 2 * inner + 1  # with repeats, like i.i.d. draws
    idx = np.sort(rng.integers(0, inner, r))
    col, row = rng.standard_normal(r).astype(dtype), rng.random(r).astype(dtype)
    C, R = np.empty((n, r), dtype), np.empty((r, m), dtype)
    cr_numba.cr_gather_scale(a, b, idx, col, row, C, R)
    C0, R0 = agn.gather_scale(a, b, idx, col, row, npx)
    np.testing.assert_array_equal(C, C0)  # a product and a copy: bit-identical
    np.testing.assert_array_equal(R, R0)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((60, 45)), rng.standard_normal((45, 30))
    a0, b0 = a.copy(), b.copy()
    cr_numba.cr_norms(a, b, np.empty(45), np.empty(45))
    cr_numba.cr_gather_scale(
        a, b, np.arange(20), np.ones(20), np.ones(20), np.empty((60, 20)), np.empty((20, 30))
    )
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize(
    "kw", [{}, {"method": "topk"}, {"replace": False}, {"probabilities": "uniform"}]
)
def test_public_paths_agree(order, kw):
    rng = np.random.default_rng(2)
    a = _layout(rng.standard_normal((64, 520)) * np.arange(1, 521) ** -0.8, order)
    b = _layout(rng.standard_normal((520, 700)), order)
    with lowrank.config_context(use_kernels=True):
        fk, mk = cr_factors(a, b, 40, rng=9, **kw), cr_matmul(a, b, 40, rng=9, **kw)
    with lowrank.config_context(use_kernels=False):
        fa, ma = cr_factors(a, b, 40, rng=9, **kw), cr_matmul(a, b, 40, rng=9, **kw)
    np.testing.assert_array_equal(fk.indices, fa.indices)
    np.testing.assert_allclose(fk.weights, fa.weights, rtol=1e-12)
    np.testing.assert_allclose(fk.C, fa.C, rtol=1e-12)
    np.testing.assert_allclose(mk, ma, rtol=1e-10, atol=1e-12)
