"""Dask path of the CR functions and the Gram volumes.

The selection is drawn on the client from norms reduced over the chunks, so the same
``rng`` must give the NumPy path's indices; factors, products and expected errors must
match it, in the documented number of graph executions.
"""

from __future__ import annotations

import numpy as np
import pytest

import lowrank

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
from dask.callbacks import Callback  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.standard_normal((240, 400)) * np.arange(1, 401) ** -1.0
Y = RNG.standard_normal((400, 30))
EPS = np.finfo(np.float64).eps


@pytest.fixture(autouse=True)
def _sync():
    with dask.config.set(scheduler="sync"):
        yield


class Executions(Callback):
    def __init__(self):
        super().__init__()
        self.count = 0

    def _start(self, dsk):
        self.count += 1


def _chunked():
    return da.from_array(X, chunks=(80, 150)), da.from_array(Y, chunks=(100, 30))


def test_norms_are_exact_in_one_execution():
    a, b = _chunked()
    with Executions() as ex:
        norms = lowrank.cr_norms(a, b)
    assert ex.count == 1
    np.testing.assert_allclose(norms.columns, np.linalg.norm(X, axis=0), rtol=4 * EPS)
    np.testing.assert_allclose(norms.rows, np.linalg.norm(Y, axis=1), rtol=4 * EPS)


def test_norms_neither_overflow_nor_underflow():
    a, b = _chunked()
    big = lowrank.cr_norms(a * 1e300, b * 1e-300)
    np.testing.assert_allclose(big.columns, 1e300 * np.linalg.norm(X, axis=0), rtol=1e-14)
    np.testing.assert_allclose(big.rows, 1e-300 * np.linalg.norm(Y, axis=1), rtol=1e-14)


@pytest.mark.parametrize("kwargs", [
    {}, {"method": "topk"}, {"replace": False}, {"probabilities": "uniform"},
    {"rescale": "diagonal"}, {"probabilities": np.full(400, 1 / 400)},
], ids=["iid", "topk", "no-replace", "uniform", "diagonal", "user-p"])
def test_same_draws_as_numpy_and_one_execution(kwargs):
    a, b = _chunked()
    with Executions() as ex:
        f = lowrank.cr_factors(a, b, 60, rng=3, **kwargs)
    ref = lowrank.cr_factors(X, Y, 60, rng=3, **kwargs)
    assert ex.count == (2 if kwargs.get("rescale") == "diagonal" else 1)
    np.testing.assert_array_equal(f.indices, ref.indices)
    np.testing.assert_allclose(f.weights, ref.weights, rtol=1e-10)
    assert isinstance(f.C, da.Array) and isinstance(f.R, da.Array)
    np.testing.assert_allclose(f.C.compute() @ f.R.compute(), ref.C @ ref.R,
                               atol=1e-10 * np.abs(ref.C @ ref.R).max())
    prod = lowrank.cr_matmul(a, b, 60, rng=3, **kwargs)
    np.testing.assert_allclose(prod.compute(), lowrank.cr_matmul(X, Y, 60, rng=3, **kwargs),
                               atol=1e-10 * np.abs(ref.C @ ref.R).max())


def test_sampled_product_is_unbiased():
    a, b = _chunked()
    exact = X @ Y
    mean = np.mean([lowrank.cr_matmul(a, b, 80, rng=s).compute() for s in range(150)], axis=0)
    expected = float(lowrank.cr_expected_error(X, Y, 80))
    # E‖mean − ab‖² = E‖CR − ab‖² / 150: the average must be within ~4 standard errors
    assert np.sum((mean - exact) ** 2) <= 4 * expected / 150


@pytest.mark.parametrize("kwargs", [{}, {"method": "topk"}, {"probabilities": "uniform"}])
def test_expected_error_matches_numpy_in_two_executions(kwargs):
    a, b = _chunked()
    with Executions() as ex:
        err = lowrank.cr_expected_error(a, b, 60, **kwargs)
    assert ex.count == 2
    np.testing.assert_allclose(err, lowrank.cr_expected_error(X, Y, 60, **kwargs), rtol=1e-10)


def test_expected_error_without_closed_form_is_refused_by_name():
    a, b = _chunked()
    with pytest.raises(ValueError, match="exact formulas only"):
        lowrank.cr_expected_error(a, b, 60, replace=False)


def test_unknown_outer_chunks_and_a_numpy_partner_work():
    a, _ = _chunked()
    keep = np.arange(240) % 3 != 0
    filtered = a[da.from_array(keep, chunks=80)]  # unknown row chunk sizes
    assert np.isnan(filtered.shape[0])
    out = lowrank.cr_matmul(filtered, Y, 60, rng=1).compute()
    ref = lowrank.cr_matmul(X[keep], Y, 60, rng=1)
    np.testing.assert_allclose(out, ref, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("call, error, match", [
    (lambda a, b: lowrank.cr_matmul(a, b[:-1], 5), ValueError, "inner dimensions"),
    (lambda a, b: lowrank.cr_matmul(a, b, 0), ValueError, "`rank`"),
    (lambda a, b: lowrank.cr_matmul(a, b, 5, method="auto"), ValueError, "method='auto'"),
    (lambda a, b: lowrank.cr_matmul(a, b, 5, xp=np), TypeError, "`xp`"),
    (lambda a, b: lowrank.cr_matmul(a * 1j, b, 5), TypeError, "real"),
    (lambda a, b: lowrank.cr_factors(a, b, 5, norms=(np.ones(3), None)), ValueError,
     "norms.columns"),
])
def test_bad_input_is_refused_by_name(call, error, match):
    with pytest.raises(error, match=match):
        call(*_chunked())


def test_nan_is_seen_in_the_norms():
    bad = X.copy()
    bad[100, 7] = np.inf
    with pytest.raises(ValueError, match="`a` contains NaN or Inf"):
        lowrank.cr_matmul(da.from_array(bad, chunks=80), Y, 5, rng=0)


def test_batched_volumes_match_numpy():
    stack = RNG.standard_normal((9, 20, 4))
    a = da.from_array(stack, chunks=(4, 10, 4))
    for func in (lowrank.gram_volume, lowrank.log_gram_volume, lowrank.nonsquare_det):
        out = func(a)
        assert isinstance(out, da.Array) and out.shape == (9,)
        np.testing.assert_allclose(out.compute(), func(stack), rtol=1e-13)
    wide = da.swapaxes(a, -1, -2)  # the longer side: the rows
    np.testing.assert_allclose(lowrank.log_nonsquare_det(wide).compute(),
                               lowrank.log_gram_volume(stack), rtol=1e-13)


def test_tall_volume_by_tsqr_equals_the_product_of_singular_values():
    tall = RNG.standard_normal((3000, 6))
    a = da.from_array(tall, chunks=(500, 6))
    s = np.linalg.svd(tall, compute_uv=False)
    np.testing.assert_allclose(lowrank.gram_volume(a).compute(), np.prod(s), rtol=1e-12)
    np.testing.assert_allclose(lowrank.log_nonsquare_det(a.T).compute(), np.sum(np.log(s)),
                               rtol=1e-12)
    bad = tall.copy()
    bad[2000, 1] = np.nan
    lazy = lowrank.gram_volume(da.from_array(bad, chunks=(500, 6)))  # raises when computed
    with pytest.raises(ValueError, match="`a` contains NaN or Inf"):
        lazy.compute()
