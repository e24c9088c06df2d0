"""svd_approx: fixed accuracy meets rtol with an honest error estimate; passes are counted."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import matrix_with_spectrum, same_namespace, to_numpy
from hypothesis import given
from hypothesis import strategies as st

import lowrank

SPECTRUM = 0.85 ** np.arange(90)


def true_rel_error(a, res):
    a = to_numpy(a).astype(np.result_type(to_numpy(a).dtype, np.float64))
    approx = (to_numpy(res.U) * to_numpy(res.S)) @ to_numpy(res.Vh)
    return np.linalg.norm(a - approx) / np.linalg.norm(a)


def is_float32(xp, dtype):
    return dtype == xp.float32


@pytest.mark.parametrize("route", ["randqb", "auto"])
@pytest.mark.parametrize("rtol", [0.3, 1e-2, 1e-5])
def test_rtol_met_with_honest_estimate(xp, dtype, asarray, rtol, route, monkeypatch):
    if route == "randqb":  # never hand over to the exact SVD
        monkeypatch.setattr(lowrank._agnostic._qb, "EXACT_BELOW", 0)
        monkeypatch.setattr(lowrank._agnostic._qb, "EXACT_FRACTION", 1)
    a = asarray(matrix_with_spectrum(130, 90, SPECTRUM, seed=0), dtype=dtype)
    res = lowrank.svd_approx(a, rtol=rtol, rng=0)
    assert same_namespace(xp, res.U)
    assert res.U.dtype == dtype
    assert res.S.dtype == dtype
    assert res.rank == res.S.shape[0] == res.U.shape[1] == res.Vh.shape[0]
    err = true_rel_error(a, res)
    floor = 3e-3 if is_float32(xp, dtype) else 1e-7  # 10·sqrt(eps): the probe regime
    assert err <= rtol * 1.05 or err <= floor
    assert res.error_estimate <= rtol
    # honest: the cheap update ‖a‖² − ‖B‖² cancels, with absolute error ~ c·eps·‖a‖²
    # (rounding of B's entries, summed), i.e. ~ c·eps·(‖a‖/err)²/2 relative on err;
    # c = 30 covers a 90-column B with margin. Probe estimates lie within 3x.
    if err > floor:
        eps = float(np.finfo(np.float32 if is_float32(xp, dtype) else np.float64).eps)
        assert abs(res.error_estimate - err) <= (1e-9 + 15 * eps / err**2) * err
    else:
        assert err / 3 - 1e-6 <= res.error_estimate <= 3 * err + 1e-6
    # near-optimal rank: the Eckart–Young optimum needs at least this rank
    tails = np.sqrt(np.cumsum((SPECTRUM**2)[::-1])[::-1]) / np.linalg.norm(SPECTRUM)
    needed = int(np.argmax(np.append(tails, 0.0) <= rtol))
    assert needed - 1 <= res.rank <= needed + 3


def test_fixed_rank_estimate_and_passes(xp, asarray):
    # 200 x 120: the 6 blocks of 15 columns stay narrower than 120 (a basis as wide as
    # min(m, n) is replaced by one exact SVD, see test_randomized_full_rank.py)
    a = asarray(matrix_with_spectrum(200, 120, (1.0 + np.arange(120)) ** -1.0, seed=1))
    res = lowrank.svd_approx(a, rank=10, rng=0)
    err = true_rel_error(a, res)
    assert res.rank == 10
    assert abs(res.error_estimate - err) <= 1e-6 * err
    assert res.passes == 1 + 5 + 4  # ‖a‖_F, then block Krylov with 5 extensions (dense: n_iter + 4 reads)
    res = lowrank.svd_approx(a, rank=10, n_power_iter=1, rng=0)
    assert res.passes == 1 + 4


class Counting(np.ndarray):
    """ndarray counting the reads of ``a`` made by products with it or with chunks of it.

    A product with a row (or column) chunk reads that chunk's share of ``a``; a product
    with the same chunk (not all of ``a``) as the product just before re-uses it from cache (a chunked
    ``AᴴA`` product reads each chunk once for its two products) and is not counted.
    """

    reads = 0.0
    last = None

    def _count(self):
        root = self
        while isinstance(root.base, Counting):
            root = root.base
        key = (np.lib.array_utils.byte_bounds(self), self.shape, self.strides)
        if key != Counting.last or self.size == root.size:  # the whole of a: read again
            Counting.reads += self.size / root.size
        Counting.last = key

    def __matmul__(self, other):
        self._count()
        return np.asarray(self) @ np.asarray(other)

    def __rmatmul__(self, other):
        self._count()
        return np.asarray(other) @ np.asarray(self)

    def __array_function__(self, func, types, args, kwargs):
        if func is np.linalg.svd:  # the exact route reads `a` once
            Counting.reads += 1
            Counting.last = None
        return super().__array_function__(func, types, args, kwargs)


@pytest.mark.parametrize("kwargs", [{"rtol": 1e-4}, {"rtol": 1e-12}, {"rank": 7},
                                    {"rtol": 0.05, "block_size": 5, "n_power_iter": 2}])
@pytest.mark.parametrize("route", ["randqb", "exact"])
def test_passes_are_counted_honestly(kwargs, route, monkeypatch):
    if route == "randqb":  # never hand over to the exact SVD
        monkeypatch.setattr(lowrank._agnostic._qb, "EXACT_BELOW", 0)
        monkeypatch.setattr(lowrank._agnostic._qb, "EXACT_FRACTION", 1)
    # 13 chunks of 8 rows (the last one ragged), so that consecutive reads never look
    # like the re-use of one chunk
    monkeypatch.setattr(lowrank._agnostic._operator, "_GRAM_CHUNK", 8 * 70)
    a = matrix_with_spectrum(100, 70, 0.8 ** np.arange(70), seed=2).view(Counting)
    Counting.reads, Counting.last = 0.0, None
    res = lowrank.svd_approx(a, rng=0, **kwargs)
    assert res.passes == pytest.approx(Counting.reads + 1)  # + the read computing ‖a‖_F
    err = true_rel_error(np.asarray(a), res)
    if "rtol" in kwargs:
        assert err <= max(kwargs["rtol"], 1e-7)


def test_sparse_input_and_wide():
    sp = pytest.importorskip("scipy.sparse")
    dense = matrix_with_spectrum(60, 150, 0.75 ** np.arange(60), seed=3)
    res = lowrank.svd_approx(sp.csr_array(dense), rtol=1e-3, rng=1)
    assert isinstance(res.U, np.ndarray)
    assert res.U.shape == (60, res.rank)
    assert res.Vh.shape == (res.rank, 150)
    err = true_rel_error(dense, res)
    assert err <= 1e-3
    assert abs(err - res.error_estimate) <= 1e-3 * err


def test_zero_matrix_and_rank_zero(xp, asarray):
    res = lowrank.svd_approx(asarray(np.zeros((6, 4))), rtol=0.1)
    assert res.rank == 0
    assert res.error_estimate == 0.0
    assert res.U.shape == (6, 0)
    res = lowrank.svd_approx(asarray(np.ones((6, 4))), rank=0)
    assert res.rank == 0
    assert res.Vh.shape == (0, 4)
    assert res.error_estimate == pytest.approx(1.0)


def test_same_seed_same_result_and_input_untouched(xp, asarray):
    a = asarray(matrix_with_spectrum(70, 50, SPECTRUM[:50], seed=4))
    before = to_numpy(a).copy()
    r1 = lowrank.svd_approx(a, rtol=1e-3, rng=5)
    r2 = lowrank.svd_approx(a, rtol=1e-3, rng=5)
    assert r1.rank == r2.rank
    assert r1.error_estimate == r2.error_estimate
    assert np.array_equal(to_numpy(r1.U), to_numpy(r2.U))
    assert np.array_equal(to_numpy(a), before)


def test_bad_inputs(xp, asarray):
    a = asarray(np.ones((6, 4)))
    with pytest.raises(ValueError, match="exactly one of `rank` and `rtol`"):
        lowrank.svd_approx(a)
    with pytest.raises(ValueError, match="exactly one of `rank` and `rtol`"):
        lowrank.svd_approx(a, rank=1, rtol=0.1)
    for rtol in (0.0, 1.0, -0.5, 2.0, float("nan")):
        with pytest.raises(ValueError, match="`rtol`"):
            lowrank.svd_approx(a, rtol=rtol)
    with pytest.raises(ValueError, match=r"`rank`.*got 5"):
        lowrank.svd_approx(a, rank=5)
    with pytest.raises(ValueError, match="`a` must have ndim"):
        lowrank.svd_approx(asarray(np.ones((2, 6, 4))), rank=1)
    with pytest.raises(ValueError, match="`block_size`"):
        lowrank.svd_approx(a, rtol=0.1, block_size=0)
    bad = np.ones((6, 4))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        lowrank.svd_approx(asarray(bad), rtol=0.1)


def test_linear_operator_refused():
    from scipy.sparse.linalg import aslinearoperator

    with pytest.raises(TypeError, match="norm is needed"):
        lowrank.svd_approx(aslinearoperator(np.ones((5, 4))), rtol=0.1)


@given(m=st.integers(1, 30), n=st.integers(1, 30), rtol=st.floats(1e-6, 0.9),
       seed=st.integers(0, 99))
def test_property_rtol(m, n, rtol, seed):
    a = np.random.default_rng(seed).standard_normal((m, n))
    with pytest.MonkeyPatch.context() as mp:  # randQB itself, not the exact SVD
        mp.setattr(lowrank._agnostic._qb, "EXACT_BELOW", 0)
        mp.setattr(lowrank._agnostic._qb, "EXACT_FRACTION", 1)
        _check_rtol_result(a, lowrank.svd_approx(a, rtol=rtol, rng=seed, block_size=4), rtol)
    _check_rtol_result(a, lowrank.svd_approx(a, rtol=rtol, rng=seed, block_size=4), rtol)


def _check_rtol_result(a, res, rtol):
    m, n = a.shape
    assert res.U.shape == (m, res.rank)
    assert res.Vh.shape == (res.rank, n)
    err = true_rel_error(a, res)
    assert err <= rtol * (1 + 1e-9) + 1e-7
    assert res.error_estimate <= rtol
    assert np.allclose(res.U.T @ res.U, np.eye(res.rank), atol=1e-10)


@pytest.mark.parametrize("rtol", [0.7, 0.5, 0.3])
def test_rtol_rank_is_the_optimal_one_on_flat_spectra(rtol):
    # A Gaussian matrix's flat spectrum makes randQB's basis poor; once its basis would
    # cover a quarter of min(m, n), one exact SVD is cheaper and gives the Eckart–Young rank
    a = np.random.default_rng(3).standard_normal((300, 100))
    s = np.linalg.svd(a, compute_uv=False)
    tails = np.sqrt(np.cumsum((s**2)[::-1])[::-1]) / np.linalg.norm(s)
    needed = int(np.argmax(np.append(tails, 0.0) <= rtol))
    res = lowrank.svd_approx(a, rtol=rtol, rng=0)
    assert res.rank == needed
    err = true_rel_error(a, res)
    assert err <= rtol
    assert res.error_estimate == pytest.approx(err, rel=1e-10)
    assert np.allclose(res.U.T @ res.U, np.eye(res.rank), atol=1e-12)
    assert np.allclose(res.Vh.conj() @ res.Vh.T, np.eye(res.rank), atol=1e-12)
    wide = lowrank.svd_approx(a.T, rtol=rtol, rng=0)
    assert wide.rank == needed
    assert wide.U.shape == (100, needed)
    assert wide.Vh.shape == (needed, 300)
