"""The short-side block Krylov route of randomized_svd on dense arrays.

Its basis is n × L (the short side), each ``AᴴA V`` reads ``a`` once in row chunks, the
Ritz vectors come from the Gram matrix ``Vᴴ AᴴA V`` (or, where rounding in it could
matter, from a TSQR of ``A V``). Checked here: the chunked product against two plain
products (every orientation, batch, dtype, scale), the accuracy against the long-side
basis built from the same Ω (never worse, as in exact arithmetic), both Ritz routes,
the pass count, and that neither route makes an m-row temporary wider than ``rank``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import eps, matrix_with_spectrum, peak_columns, to_numpy

import lowrank
from lowrank._agnostic import _gram_krylov, _operator
from lowrank._agnostic._operator import Operator


@pytest.fixture
def small_chunks(monkeypatch):
    """Force many row chunks (and a ragged last one) on small matrices."""
    monkeypatch.setattr(_operator, "_GRAM_CHUNK", 7 * 13)


@pytest.fixture
def ritz_routes(monkeypatch):
    """Record which Ritz route each call took (True: the Gram matrix's eigenvectors)."""
    seen = []
    original = _gram_krylov._gram_resolves

    def spy(lam, rank, xp):
        seen.append(original(lam, rank, xp))
        return seen[-1]

    monkeypatch.setattr(_gram_krylov, "_gram_resolves", spy)
    return seen


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("kind", ["real", "complex", "batched"])
@pytest.mark.parametrize("exponent", [0, 301, -301])
def test_gram_product_matches_two_products(xp, asarray, small_chunks, transposed, kind,
                                           exponent):
    rng = np.random.default_rng(0)
    shape = (3, 40, 13) if kind == "batched" else (40, 13)
    a = rng.standard_normal(shape)
    dtype = xp.float64
    if kind == "complex":
        a = a + 1j * rng.standard_normal(shape)
        dtype = xp.complex128
    a = asarray(a * 2.0**-exponent, dtype=dtype)  # the scaled operator is near 1 again
    op = Operator(a, xp, dtype=dtype, dense=True, transposed=transposed).scaled(exponent)
    n = op.n
    x = rng.standard_normal((*shape[:-2], n, 4))
    if kind == "complex":
        x = x + 1j * rng.standard_normal(x.shape)
    x = asarray(x, dtype=dtype)
    factor = asarray(np.full((*shape[:-2], 1, 1), 0.5), dtype=dtype)
    want = to_numpy(op.rmatmat(op.matmat(x) * factor) * factor)
    before = op.passes
    got = to_numpy(op.gram_matmat(x, factor))
    assert op.passes == before + 1  # one read of a
    assert np.all(np.isfinite(got))
    assert np.linalg.norm(got - want) <= 64 * eps("float64") * np.linalg.norm(want)
    chunks = [to_numpy(y) for y in op.row_chunk_matmat(x, factor)]
    full = to_numpy(op.matmat(x) * factor)
    assert np.linalg.norm(np.concatenate(chunks, axis=-2) - full) <= (
        16 * eps("float64") * np.linalg.norm(full))


def _error(a, res):
    U, S, Vh = (to_numpy(f) for f in res)
    return float(np.linalg.norm(a - (U * S) @ Vh))


@pytest.mark.parametrize("spectrum", ["flat", "power", "graded", "low_rank"])
@pytest.mark.parametrize("wide", [False, True])
def test_never_less_accurate_than_the_long_side_basis(spectrum, wide, ritz_routes):
    from scipy.sparse.linalg import aslinearoperator

    s = {"flat": 1 / np.arange(1, 201) ** 0.05, "power": 1 / np.arange(1, 201),
         "graded": 0.3 ** np.arange(200), "low_rank": np.r_[np.arange(7, 0, -1), np.zeros(193)]}
    a = matrix_with_spectrum(900, 200, s[spectrum], seed=4)
    a = a.T.copy() if wide else a
    k = 16
    opt = math.sqrt(float(np.sum(s[spectrum][k:] ** 2)))
    short = lowrank.randomized_svd(a, k, rng=1)
    # a LinearOperator takes the long-side basis, from the same Gaussian Ω
    long_side = lowrank.randomized_svd(aslinearoperator(a), k, rng=1)
    slack = 32 * eps("float64") * s[spectrum][0]
    assert _error(a, short) <= _error(a, long_side) + slack
    assert _error(a, short) >= opt - slack
    for f, axis in ((to_numpy(short.U), 0), (to_numpy(short.Vh).T, 0)):
        assert np.abs(f.T @ f - np.eye(k)).max() <= 64 * eps("float64")
    assert short.passes == 5 + 4 + (0 if ritz_routes[-1] else 1)
    # flat and slowly decaying spectra keep the Gram route; the others need the TSQR
    assert ritz_routes == [spectrum in ("flat", "power")]


@pytest.mark.parametrize("spectrum", ["power", "graded"])
def test_both_ritz_routes_hold_no_long_side_basis(spectrum, ritz_routes):
    m, n, k = 30000, 200, 16
    s = 1 / np.arange(1, n + 1) if spectrum == "power" else 0.3 ** np.arange(n)
    a = matrix_with_spectrum(m, n, s, seed=5)
    lowrank.randomized_svd(a[:500], k, rng=0)  # lazy imports before measuring
    b = math.ceil(k / 2) + 10
    cols = peak_columns(lambda: lowrank.randomized_svd(a, k, rng=0), m)
    assert ritz_routes[-1] == (spectrum == "power")
    assert 2 * k <= cols <= 3 * k + b  # a long-side basis is 6·b = 108 columns


def test_oversampling_counts_without_power_iterations():
    a = np.random.RandomState(0).randn(1000, 100)
    s = np.linalg.svd(a, compute_uv=False)
    opt = math.sqrt(float(np.sum(s[10:] ** 2)))
    errs = [_error(a, lowrank.randomized_svd(a, 10, n_power_iter=0, n_oversamples=p, rng=0))
            for p in (0, 40)]
    assert errs[1] - opt < 0.5 * (errs[0] - opt)  # the sketch grew with n_oversamples


def test_tall_and_wide_give_transposed_factors():
    a = matrix_with_spectrum(500, 120, 1 / np.arange(1, 121), seed=6)
    tall = lowrank.randomized_svd(a, 8, rng=2)
    wide = lowrank.randomized_svd(a.T.copy(), 8, rng=2)
    np.testing.assert_allclose(tall.S, wide.S, rtol=1e-12)
    proj = to_numpy(tall.U) @ to_numpy(tall.U).T
    proj_w = to_numpy(wide.Vh).T @ to_numpy(wide.Vh)
    assert np.abs(proj - proj_w).max() <= 1e-10
