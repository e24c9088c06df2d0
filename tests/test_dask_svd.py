"""Dask path of randomized_svd, randomized_range_finder and svd_approx (threaded scheduler).

Invariants: orthonormal factors, the Rayleigh–Ritz identity ``aᴴ U = Vhᴴ S``, errors at
least the Eckart–Young optimum, the same subspace as the NumPy path for the same seed,
one graph execution per documented pass and one read of every chunk per pass.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from helpers import matrix_with_spectrum

import lowrank

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
from dask.callbacks import Callback  # noqa: E402

M, N, RANK = 1500, 200, 10
S_TRUE = 1.0 / np.arange(1, N + 1)
A = matrix_with_spectrum(M, N, S_TRUE, seed=0)
OPT = np.sqrt(np.sum(S_TRUE[RANK:] ** 2))  # Eckart–Young optimum, Frobenius
EPS = np.finfo(np.float64).eps


@pytest.fixture(autouse=True)
def _scheduler(request):
    """Synchronous by default (fast, same semantics); tests marked ``threads`` use threads."""
    name = "threads" if "threads" in request.keywords else "sync"
    with dask.config.set(scheduler=name):
        yield


class Executions(Callback):
    """Counts graph executions (one ``_start`` per scheduler call)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def _start(self, dsk):
        self.count += 1


class ChunkReads:
    """A dask array over ``x`` whose every chunk evaluation is counted, per chunk."""

    def __init__(self, x, rows):
        self.counts, self._lock = {}, threading.Lock()
        base = da.from_array(x, chunks=(rows, -1))
        self.array = base.map_blocks(self._read, dtype=x.dtype)

    def _read(self, block, block_info=None):
        key = block_info[0]["chunk-location"]
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1
        return block


def _dask(x, rows=300):
    return da.from_array(x, chunks=(rows, -1))


def _check_svd(a, U, S, Vh, *, tol, projected="rows"):
    """Orthonormal factors and the Rayleigh–Ritz identity, exact up to rounding.

    The block Krylov path truncates ``a X Xᴴ`` (``X`` its short-side basis): the long-side
    factor is ``a`` applied to the short-side one, ``a v_j = s_j u_j`` for tall ``a``
    (``projected="rows"``). Subspace iteration truncates ``Q Qᴴ a``: ``aᴴ u_j = s_j v_j``
    for tall ``a`` (``projected="columns"``). Wide ``a`` is factorised through ``aᴴ``, so
    the identities swap sides.
    """
    k = S.shape[0]
    assert np.all(np.diff(S) <= 0)
    assert np.abs(U.T.conj() @ U - np.eye(k)).max() <= tol
    assert np.abs(Vh @ Vh.T.conj() - np.eye(k)).max() <= tol
    scale = np.linalg.norm(a, 2)
    tall = a.shape[0] >= a.shape[1]
    if tall == (projected == "columns"):
        assert np.abs(a.T.conj() @ U - Vh.T.conj() * S).max() <= tol * scale
    else:
        assert np.abs(a @ Vh.T.conj() - U * S).max() <= tol * scale


@pytest.mark.parametrize("method", ["block_krylov", "subspace"])
def test_tall_matches_numpy_subspace_and_is_near_optimal(method):
    res = lowrank.randomized_svd(_dask(A), RANK, method=method, rng=1)
    ref = lowrank.randomized_svd(A, RANK, method=method, rng=1)
    assert isinstance(res.U, da.Array) and res.U.chunks[0] == _dask(A).chunks[0]
    assert isinstance(res.S, np.ndarray) and isinstance(res.Vh, np.ndarray)
    U = res.U.compute()
    _check_svd(A, U, res.S, res.Vh, tol=100 * N * EPS,
               projected="rows" if method == "block_krylov" else "columns")
    # both near the optimum at the default depth: the same subspace as the in-memory path
    assert np.linalg.norm(U @ U.T @ ref.U - ref.U, 2) <= 1e-8
    err = np.linalg.norm(A - (U * res.S) @ res.Vh)
    err_ref = np.linalg.norm(A - (ref.U * ref.S) @ ref.Vh)
    assert err >= OPT * (1 - 1e-12)
    assert abs(err - err_ref) <= 1e-9 * OPT
    assert np.all(res.S <= S_TRUE[:RANK] * (1 + 1e-12))  # Ritz values interlace
    assert res.passes == (12 if method == "block_krylov" else 10)  # 2 q + 2


@pytest.mark.parametrize("q", [0, 1, 2])
def test_block_krylov_beats_svd_compressed_at_equal_passes(q):
    """One aᴴa product per read: at 2 q + 2 reads the excess error over the optimum is
    at most 1/5 of svd_compressed's (same passes, same width), and the factorisation is
    the truncated SVD of a X Xᴴ: a Vᴴ = U S exactly and ‖a − U S Vh‖² = ‖a‖² − ΣS²."""
    a = _dask(A)
    res = lowrank.randomized_svd(a, RANK, n_power_iter=q, rng=0)
    assert res.passes == 2 * q + 2
    U = res.U.compute()
    _check_svd(A, U, res.S, res.Vh, tol=100 * N * EPS)
    err = np.linalg.norm(A - (U * res.S) @ res.Vh)
    np.testing.assert_allclose(err**2, np.sum(S_TRUE**2) - np.sum(res.S**2), rtol=1e-8)
    excess = []
    for seed in range(3):
        u, s, v = da.linalg.svd_compressed(a, RANK, n_power_iter=q, seed=seed)
        u, s, v = dask.compute(u, s, v)
        excess.append(np.linalg.norm(A - (u * s) @ v) / OPT - 1)
    assert err >= OPT * (1 - 1e-12)
    assert err / OPT - 1 <= np.median(excess) / 5


def test_block_krylov_on_a_low_rank_matrix_is_exact():
    """Rank 6 < ℓ: the Ritz step meets directions with λ = 0; the result stays exact."""
    low = matrix_with_spectrum(M, N, np.linspace(3.0, 1.0, 6), seed=9)
    for q in (0, 1):
        res = lowrank.randomized_svd(_dask(low), 8, n_power_iter=q, rng=0)
        U = res.U.compute()
        _check_svd(low, U, res.S, res.Vh, tol=100 * N * EPS)
        np.testing.assert_allclose(res.S[:6], np.linspace(3.0, 1.0, 6), rtol=1e-12)
        assert res.S[6:].max() <= 1e-12
        assert np.linalg.norm(low - (U * res.S) @ res.Vh) <= 1e-12 * np.linalg.norm(low)


def test_huge_and_tiny_scales_are_equivariant():
    """The first read squares chunk entries after an exact power-of-two scaling."""
    ref = lowrank.randomized_svd(_dask(A), RANK, n_power_iter=1, rng=0)
    for scale in (2.0**900, 2.0**-900):
        res = lowrank.randomized_svd(_dask(A * scale), RANK, n_power_iter=1, rng=0)
        np.testing.assert_allclose(res.S / scale, ref.S, rtol=1e-12)
        assert np.abs(res.U.compute() - ref.U.compute()).max() <= 1e-10


def test_wide_input_returns_lazy_vh_chunked_like_columns():
    a = da.from_array(A.T, chunks=(-1, 300))
    res = lowrank.randomized_svd(a, RANK, rng=2)
    assert isinstance(res.Vh, da.Array) and res.Vh.chunks[1] == a.chunks[1]
    assert isinstance(res.U, np.ndarray)
    Vh = res.Vh.compute()
    _check_svd(A.T, res.U, res.S, Vh, tol=100 * N * EPS)
    assert np.linalg.norm(A.T - (res.U * res.S) @ Vh) >= OPT * (1 - 1e-12)
    # signs: the largest entry of every short-side vector (columns of U here) is positive
    piv = res.U[np.argmax(np.abs(res.U), axis=0), np.arange(RANK)]
    assert np.all(piv > 0)


def test_column_chunks_are_merged_and_float32_keeps_its_dtype():
    a = da.from_array(A.astype(np.float32), chunks=(400, 50))
    res = lowrank.randomized_svd(a, RANK, rng=0)
    U = res.U.compute()
    assert U.dtype == np.float32 and res.S.dtype == np.float32 and res.Vh.dtype == np.float32
    _check_svd(A, U.astype(np.float64), res.S.astype(np.float64), res.Vh.astype(np.float64),
               tol=100 * N * float(np.finfo(np.float32).eps))


def test_complex_input():
    C = matrix_with_spectrum(600, 40, 1.0 / np.arange(1, 41), seed=3, complex_=True)
    res = lowrank.randomized_svd(_dask(C, 150), 6, rng=0)
    _check_svd(C, res.U.compute(), res.S, res.Vh, tol=100 * 40 * EPS)
    # signs: the largest entry of each row of Vh is real and positive
    piv = res.Vh[np.arange(6), np.argmax(np.abs(res.Vh), axis=1)]
    assert np.all(piv.real > 0) and np.abs(piv.imag).max() <= 1e-12


@pytest.mark.threads
@pytest.mark.parametrize("kwargs, passes", [
    ({}, 12), ({"method": "subspace"}, 10), ({"n_power_iter": 1}, 4), ({"tol": 1e-6}, None),
    ({"n_power_iter": 0}, 2),
], ids=["krylov", "subspace", "krylov-q1", "tol", "q0"])
def test_one_execution_and_one_read_of_every_chunk_per_pass(kwargs, passes):
    reads = ChunkReads(A, 300)
    with Executions() as ex:
        res = lowrank.randomized_svd(reads.array, RANK, rng=0, **kwargs)
    assert ex.count == res.passes
    if passes is None:  # tol: 2 it + 3 passes after `it` extensions, at most the depth 5
        assert res.passes % 2 == 1 and 3 <= res.passes <= 13
    else:
        assert res.passes == passes
    assert set(reads.counts.values()) == {res.passes} and len(reads.counts) == M // 300
    if "tol" in kwargs:
        assert res.error_estimate <= kwargs["tol"]
        assert np.linalg.norm(A @ res.Vh.T - res.U.compute() * res.S, axis=0).max() <= (
            kwargs["tol"] * S_TRUE[0] * (1 + 1e-6))


def test_range_finder_is_orthonormal_in_2q_plus_1_passes():
    reads = ChunkReads(A, 300)
    with Executions() as ex:
        Q = lowrank.randomized_range_finder(reads.array, 20, n_power_iter=2, rng=0)
    assert ex.count == 5 and set(reads.counts.values()) == {5}
    Q = Q.compute()
    assert np.abs(Q.T @ Q - np.eye(20)).max() <= 100 * N * EPS
    ref = lowrank.randomized_range_finder(A, 20, n_power_iter=2, rng=0)
    assert np.linalg.norm(Q @ (Q.T @ ref) - ref, 2) <= 1e-8


def test_basis_spanning_all_columns_takes_one_exact_pass():
    """rank 50 of n = 200: 11 Krylov blocks of 35 columns would span everything: TSQR + SVD."""
    reads = ChunkReads(A, 300)
    with Executions() as ex:
        res = lowrank.randomized_svd(reads.array, 50, rng=0)
    assert ex.count == res.passes == 1 and set(reads.counts.values()) == {1}
    U = res.U.compute()
    np.testing.assert_allclose(res.S, S_TRUE[:50], rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(A - (U * res.S) @ res.Vh),
                               np.sqrt(np.sum(S_TRUE[50:] ** 2)), rtol=1e-10)
    _check_svd(A, U, res.S, res.Vh, tol=100 * N * EPS)


def test_range_finder_of_a_rank_deficient_matrix_stays_orthonormal():
    """AΩ has rank 4 < 10: CholeskyQR fails and the in-graph TSQR takes over."""
    low = matrix_with_spectrum(M, N, np.ones(4), seed=5)
    Q = lowrank.randomized_range_finder(_dask(low), 10, n_power_iter=0, rng=0).compute()
    assert np.abs(Q.T @ Q - np.eye(10)).max() <= 100 * N * EPS
    assert np.linalg.norm(low - Q @ (Q.T @ low)) <= 1e-12 * np.linalg.norm(low)


def test_krylov_blocks_without_new_directions_get_random_ones():
    """Rank 5 < the Krylov space: deflated blocks, the basis stays orthonormal."""
    low = matrix_with_spectrum(M, N, np.linspace(2.0, 1.0, 5), seed=6)
    res = lowrank.randomized_svd(_dask(low), 10, rng=0)
    U = res.U.compute()
    _check_svd(low, U, res.S, res.Vh, tol=100 * N * EPS)
    np.testing.assert_allclose(res.S[:5], np.linspace(2.0, 1.0, 5), rtol=1e-12)
    assert res.S[5:].max() <= 1e-12


def test_same_seed_same_chunking_is_reproducible_and_chunking_only_rounds():
    one = lowrank.randomized_svd(_dask(A, 300), RANK, rng=7)
    two = lowrank.randomized_svd(_dask(A, 300), RANK, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(one.U.compute(), two.U.compute())
    np.testing.assert_array_equal(one.S, two.S)
    other = lowrank.randomized_svd(_dask(A, 450), RANK, rng=7)
    # another chunking changes the reduction order only: rounding-level differences
    np.testing.assert_allclose(other.S, one.S, rtol=1e-10)
    assert np.abs(other.U.compute() - one.U.compute()).max() <= 1e-8


def test_compute_returns_numpy_after_an_execution_that_reads_nothing():
    reads = ChunkReads(A, 300)
    with Executions() as ex:
        res = lowrank.randomized_svd(reads.array, RANK, rng=0, compute=True)
    assert isinstance(res.U, np.ndarray)
    assert ex.count == res.passes + 1 and set(reads.counts.values()) == {res.passes}
    lazy = lowrank.randomized_svd(_dask(A), RANK, rng=0)
    np.testing.assert_allclose(res.U, lazy.U.compute(), atol=1e-12)


@pytest.mark.parametrize("kwargs", [{"rank": RANK}, {"rtol": 0.05}, {"rtol": 0.3}],
                         ids=["rank", "rtol-exact-route", "rtol-randqb"])
def test_svd_approx_reports_its_error_and_passes(kwargs):
    reads = ChunkReads(A, 300)
    with Executions() as ex:
        res = lowrank.svd_approx(reads.array, rng=0, **kwargs)
    U = res.U.compute()
    err = np.linalg.norm(A - (U * res.S) @ res.Vh) / np.linalg.norm(A)
    assert ex.count == res.passes and set(reads.counts.values()) == {res.passes}
    assert res.rank == res.S.shape[0] == U.shape[1]
    np.testing.assert_allclose(res.error_estimate, err, rtol=1e-6)
    if "rtol" in kwargs:
        assert err <= kwargs["rtol"]
        # the smallest rank meeting rtol is optimal up to the basis' accuracy
        assert np.sqrt(np.sum(S_TRUE[res.rank - 1:] ** 2)) / np.linalg.norm(S_TRUE) > (
            kwargs["rtol"] * (1 - 1e-3))
    _check_svd(A, U, res.S, res.Vh, tol=100 * N * EPS,
               projected="columns" if "rtol" in kwargs else "rows")


@pytest.mark.parametrize("rtol", [0.95, 0.9])
def test_svd_approx_rtol_rank_overshoot_matches_the_in_memory_path(rtol):
    """Flat (Gaussian) spectrum: randQB's own basis would need 15-25 % more rank than
    the optimum; the Krylov step before the truncation (2 passes) brings the rank to
    the in-memory path's."""
    g = np.random.default_rng(0).standard_normal((2000, 400))
    s = np.linalg.svd(g, compute_uv=False)
    tails = np.sqrt(np.cumsum(s[::-1] ** 2)[::-1]) / np.linalg.norm(s)  # tails[k]: rank k
    best = int(np.argmax(tails <= rtol))  # the smallest rank meeting rtol
    reads = ChunkReads(g, 250)
    with Executions() as ex:
        res = lowrank.svd_approx(reads.array, rtol=rtol, rng=0)
    ref = lowrank.svd_approx(g, rtol=rtol, rng=0)
    assert ex.count == res.passes and set(reads.counts.values()) == {res.passes}
    U = res.U.compute()
    err = np.linalg.norm(g - (U * res.S) @ res.Vh) / np.linalg.norm(g)
    assert err <= rtol
    np.testing.assert_allclose(res.error_estimate, err, rtol=1e-6)
    assert best <= res.rank <= max(ref.rank, best) + 1


def test_svd_approx_of_an_exactly_low_rank_matrix_uses_the_probe_estimate():
    low = matrix_with_spectrum(M, N, np.ones(6), seed=8)
    res = lowrank.svd_approx(_dask(low), rank=6, rng=0)
    # ‖a‖² − ΣS² is rounding here: the error is measured by 16 probes (one more pass)
    assert res.error_estimate <= 1e-12
    assert res.passes == lowrank.randomized_svd(_dask(low), 6, rng=0).passes + 1


def test_nan_is_refused_at_call_time_unless_check_finite_is_false():
    bad = A.copy()
    bad[1000, 3] = np.nan  # in the fourth row chunk
    with pytest.raises(ValueError, match="`a` contains NaN or Inf"):
        lowrank.randomized_svd(_dask(bad), 3, rng=0)
    with pytest.raises(ValueError, match="`a` contains NaN or Inf"):
        lowrank.svd_approx(_dask(bad), rtol=0.1, rng=0)
    # unchecked, NaN reaches the small SVD, which fails as on the NumPy path
    with np.errstate(invalid="ignore"), pytest.raises(np.linalg.LinAlgError):
        lowrank.randomized_svd(bad, 3, rng=0, check_finite=False)
    with np.errstate(invalid="ignore"), pytest.raises(np.linalg.LinAlgError):
        lowrank.randomized_svd(_dask(bad), 3, rng=0, check_finite=False)


@pytest.mark.parametrize("call, error, match", [
    (lambda a: lowrank.randomized_svd(a, N + 1), ValueError, "`rank`"),
    (lambda a: lowrank.randomized_svd(a, 3, xp=np), TypeError, "`xp`"),
    (lambda a: lowrank.randomized_svd(a, 3, compute=1), TypeError, "`compute`"),
    (lambda a: lowrank.randomized_svd(a, 3, method="lanczos"), ValueError, "`method`"),
    (lambda a: lowrank.randomized_svd(a[None], 3), ValueError, "2-D"),
    (lambda a: lowrank.svd_approx(a, rank=3, rtol=0.1), ValueError, "exactly one"),
    (lambda a: lowrank.randomized_range_finder(a, -1), ValueError, "`size`"),
])
def test_bad_options_are_refused_by_name(call, error, match):
    with pytest.raises(error, match=match):
        call(_dask(A))


def test_unknown_chunk_sizes_cost_one_more_pass_and_leave_the_input_unknown():
    """Rows picked by a boolean mask: the chunk sizes are read first (one pass)."""
    mask = A[:, 0] > 0
    reads = ChunkReads(A, 300)
    picked = reads.array[da.from_array(mask, chunks=300)]
    assert np.isnan(picked.shape[0])
    with Executions() as ex:
        res = lowrank.randomized_svd(picked, RANK, n_power_iter=1, rng=0)
    assert ex.count == res.passes == 5 and set(reads.counts.values()) == {5}
    assert np.isnan(picked.shape[0])  # the caller's array is not changed
    sub = A[mask]
    known = lowrank.randomized_svd(da.from_array(sub, chunks=(res.U.chunks[0], -1)), RANK,
                                   n_power_iter=1, rng=0)
    assert known.passes == 4
    np.testing.assert_allclose(res.S, known.S, rtol=1e-12)
    np.testing.assert_allclose(res.U.compute(), known.U.compute(), atol=1e-10)
    wide = lowrank.svd_approx(picked.T, rank=RANK, rng=0)
    assert wide.Vh.chunks[1] == res.U.chunks[0]
    Q = lowrank.randomized_range_finder(picked, RANK, rng=0)
    assert Q.chunks[0] == res.U.chunks[0]
    assert np.abs(Q.compute().T @ Q.compute() - np.eye(RANK)).max() <= 100 * N * EPS


def test_rank_zero_and_input_not_mutated():
    a = _dask(A)
    before = A.copy()
    res = lowrank.randomized_svd(a, 0, rng=0)
    assert res.U.shape == (M, 0) and res.S.shape == (0,) and res.Vh.shape == (0, N)
    np.testing.assert_array_equal(A, before)
