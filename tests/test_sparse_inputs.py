"""Every scipy.sparse format, and LinearOperator subclasses, through the randomized routines."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import matrix_with_spectrum

import lowrank

sp = pytest.importorskip("scipy.sparse")
spla = pytest.importorskip("scipy.sparse.linalg")

FORMATS = ["csr", "csc", "coo", "bsr", "dia", "dok", "lil"]
KINDS = ["matrix", "array"]


def _dense():
    d = matrix_with_spectrum(40, 24, 0.7 ** np.arange(24), seed=11)
    d[np.abs(d) < 0.02] = 0.0  # some structural zeros
    return d


def _as(fmt, kind, dense):
    return getattr(sp, f"{fmt}_{kind}")(dense)


def _rel_err(dense, res):
    return np.linalg.norm(dense - (res.U * res.S) @ res.Vh) / np.linalg.norm(dense)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_through_every_routine(fmt, kind):
    dense = _dense()
    a = _as(fmt, kind, dense)
    before = a.toarray().copy()
    ref = np.linalg.svd(dense, compute_uv=False)
    res = lowrank.svd_approx(a, rtol=1e-3, rng=0)
    err = _rel_err(dense, res)
    assert err <= 1e-3
    assert abs(res.error_estimate - err) <= 1e-3 * err + 1e-7  # ‖a‖ read correctly
    U, S, Vh = lowrank.randomized_svd(a, 5, rng=0)
    assert np.allclose(S, ref[:5], rtol=1e-8)
    Q = lowrank.randomized_range_finder(a, 6, rng=0)
    assert np.allclose(Q.T @ Q, np.eye(6), atol=1e-12)
    assert np.array_equal(a.toarray(), before)  # input untouched


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_found_in_every_format(fmt, kind, bad):
    dense = _dense()
    dense[3, 5] = bad
    a = _as(fmt, kind, dense)
    for call in (lambda: lowrank.svd_approx(a, rtol=0.1, rng=0),
                 lambda: lowrank.randomized_svd(a, 3, rng=0),
                 lambda: lowrank.randomized_range_finder(a, 3, rng=0)):
        with pytest.raises(ValueError, match="NaN or Inf"):
            call()


def test_duplicate_entries_are_summed_not_squared_apart():
    cols, vals = np.array([0, 0, 1, 2, 2]), np.array([0.9, -0.5, 0.5, -0.2, 0.6])
    a = sp.csr_matrix((vals, cols, np.array([0, 2, 3, 5])), shape=(3, 3))  # duplicates kept
    assert not a.has_canonical_format
    stored = a.data.copy()
    res = lowrank.svd_approx(a, rank=1, rng=0)
    dense = a.toarray()
    true = np.linalg.norm(dense - (res.U * res.S) @ res.Vh) / np.linalg.norm(dense)
    assert res.error_estimate == pytest.approx(true, rel=1e-8)
    assert np.array_equal(a.data, stored)  # the caller's duplicates are left as they were


class _OnlyVec(spla.LinearOperator):
    def __init__(self, d):
        super().__init__(dtype=d.dtype, shape=d.shape)
        self.d = d

    def _matvec(self, x):
        return self.d @ x

    def _rmatvec(self, y):
        return self.d.T @ y


class _OnlyMat(_OnlyVec):
    _matvec = _rmatvec = None

    def _matmat(self, x):
        return self.d @ x

    def _rmatmat(self, y):
        return self.d.T @ y


def _operators(d):
    yield spla.aslinearoperator(d)
    yield spla.LinearOperator(d.shape, matvec=lambda x: d @ x, rmatvec=lambda y: d.T @ y,
                              matmat=lambda x: d @ x, rmatmat=lambda y: d.T @ y, dtype=d.dtype)
    yield _OnlyVec(d)
    yield _OnlyMat(d)


@pytest.mark.parametrize("which", range(4))
def test_linear_operator_kinds_accepted(which):
    d = _dense()
    op = list(_operators(d))[which]
    U, S, Vh = lowrank.randomized_svd(op, 5, rng=0)
    assert np.allclose(S, np.linalg.svd(d, compute_uv=False)[:5], rtol=1e-8)
    Q = lowrank.randomized_range_finder(op, 4, rng=0)
    assert np.allclose(Q.T @ Q, np.eye(4), atol=1e-12)


def test_linear_operator_nan_output_caught():
    d = _dense()
    d[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        lowrank.randomized_svd(_OnlyVec(d), 3, rng=0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        lowrank.randomized_range_finder(_OnlyVec(d), 3, rng=0)
