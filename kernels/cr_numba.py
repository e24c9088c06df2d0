"""CR sampling kernels (CPU, numba): fused norm pass and fused gather-and-scale.

Layout-aware: every loop walks memory contiguously. Column norms of a C-ordered matrix
are accumulated row by row into per-thread partial sums; row norms of a C-ordered
matrix are per-row reductions; F-ordered inputs are handled as the C-ordered transpose.
Large loops run in chunks on a thread pool (``_threads``: why not ``prange``).
"""

import numpy as np

from ._jit import njit
from ._threads import n_workers, parallel_for

# Below this many elements a parallel region costs more than it saves (thread wake-up).
_PARALLEL_MIN = 1 << 20


@njit
def _sumsq(x):
    # eight independent accumulators: no allocation, and the reduction pipelines
    # without fastmath (the summation order is fixed, so results are reproducible)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    n = x.shape[0]
    stop = n - n % 8
    for j in range(0, stop, 8):
        s0 += x[j] * x[j]
        s1 += x[j + 1] * x[j + 1]
        s2 += x[j + 2] * x[j + 2]
        s3 += x[j + 3] * x[j + 3]
        s4 += x[j + 4] * x[j + 4]
        s5 += x[j + 5] * x[j + 5]
        s6 += x[j + 6] * x[j + 6]
        s7 += x[j + 7] * x[j + 7]
    total = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    for j in range(stop, n):
        total += x[j] * x[j]
    return total


@njit
def _row_norms(lo, hi, x, out):
    for i in range(lo, hi):
        out[i] = np.sqrt(_sumsq(x[i]))


@njit
def _add_squares(x, lo, hi, acc):
    # rows lo..hi-1 into acc, four rows per sweep: a quarter of the read-modify-write
    # traffic on acc (which outgrows L1 for long rows)
    stop = hi - (hi - lo) % 4
    for i in range(lo, stop, 4):
        r0, r1, r2, r3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        for j in range(acc.shape[0]):
            acc[j] += (r0[j] * r0[j] + r1[j] * r1[j]) + (r2[j] * r2[j] + r3[j] * r3[j])
    for i in range(stop, hi):
        r0 = x[i]
        for j in range(acc.shape[0]):
            acc[j] += r0[j] * r0[j]


@njit
def _col_partials(lo, hi, x, partial, step):
    # chunk c sums the squares of rows c*step .. (c+1)*step-1 into partial[c]
    for c in range(lo, hi):
        _add_squares(x, c * step, min(x.shape[0], (c + 1) * step), partial[c])


@njit
def _sqrt_of_sums(lo, hi, partial, out):
    for j in range(lo, hi):
        s = partial[0, j]
        for c in range(1, partial.shape[0]):
            s += partial[c, j]
        out[j] = np.sqrt(s)


def _col_norms(x, out, n_chunks):
    rows, cols = x.shape
    partial = np.zeros((n_chunks, cols), dtype=out.dtype)
    step = -(-rows // n_chunks) if rows else 1
    parallel_for(_col_partials, n_chunks, x, partial, step, n_chunks=n_chunks)
    _sqrt_of_sums(0, cols, partial, out)


def _axis_norms(x, out, axis):
    """Norms along ``axis`` (0: of columns, 1: of rows) of a 2-D array, layout-aware."""
    if _f_only(x):
        x, axis = x.T, 1 - axis  # the transpose is C-ordered
    chunks = _chunks(x.size, x.shape[0])
    if axis == 1:
        parallel_for(_row_norms, x.shape[0], x, out, n_chunks=chunks)
    else:
        _col_norms(x, out, chunks)


def cr_norms(a, b, a_norms, b_norms):
    """Column norms of ``a`` into ``a_norms`` and row norms of ``b`` into ``b_norms``.

    One streaming read of each input. Either pair may be ``None`` (skipped). Performs
    no input validation.
    """
    if a is not None:
        _axis_norms(a, a_norms, 0)
    if b is not None:
        _axis_norms(b, b_norms, 1)


@njit
def _gather_rows_of(lo, hi, src, idx, scale, out):
    # out[j, :] = src[idx[j], :] * scale[j]: contiguous row copies
    for j in range(lo, hi):
        s = scale[j]
        row = src[idx[j]]
        dst = out[j]
        for k in range(row.shape[0]):
            dst[k] = row[k] * s


@njit
def _gather_cols_of(lo, hi, src, idx, scale, out):
    # out[i, j] = src[i, idx[j]] * scale[j] for C-ordered src and rows lo..hi-1, four rows
    # per sweep (four independent load streams hide latency); sorted idx -> forward access
    r = idx.shape[0]
    stop = hi - (hi - lo) % 4
    for i in range(lo, stop, 4):
        r0, r1, r2, r3 = src[i], src[i + 1], src[i + 2], src[i + 3]
        d0, d1, d2, d3 = out[i], out[i + 1], out[i + 2], out[i + 3]
        for j in range(r):
            c, s = idx[j], scale[j]
            d0[j] = r0[c] * s
            d1[j] = r1[c] * s
            d2[j] = r2[c] * s
            d3[j] = r3[c] * s
    for i in range(stop, hi):
        row, dst = src[i], out[i]
        for j in range(r):
            dst[j] = row[idx[j]] * scale[j]


_BLOCK = 64


@njit
def _gather_cols_of_f(lo, hi, src_t, idx, scale, out):
    # src_t is the C-ordered transpose of an F-ordered src; out[i, j] = src_t[idx[j], i]
    # for row blocks lo..hi-1: blocks keep both the column reads and the row writes cached
    n = src_t.shape[1]
    r = idx.shape[0]
    for blk in range(lo, hi):
        start = blk * _BLOCK
        stop = min(n, start + _BLOCK)
        for j in range(r):
            col = src_t[idx[j]]
            s = scale[j]
            for i in range(start, stop):
                out[i, j] = col[i] * s


@njit
def _gather_rows_of_f(lo, hi, src_t, idx, scale, out):
    # src_t is the C-ordered transpose of an F-ordered src; out[j, k] = src_t[k, idx[j]]
    # for column blocks lo..hi-1: each row of src_t is swept forward once
    m = src_t.shape[0]
    r = idx.shape[0]
    for blk in range(lo, hi):
        for k in range(blk * _BLOCK, min(m, (blk + 1) * _BLOCK)):
            row = src_t[k]
            for j in range(r):
                out[j, k] = row[idx[j]] * scale[j]


def _chunks(size, n_items):
    """Chunks for a loop over ``n_items`` touching ``size`` elements: 1 when small."""
    if size < _PARALLEL_MIN:
        return 1
    return max(1, min(n_workers(), n_items))


def _blocks(n):
    return -(-n // _BLOCK)


def _f_only(x):
    return x.flags.f_contiguous and not x.flags.c_contiguous


def _gather_columns(a, idx, scale, C):
    chunks = _chunks(C.size, C.shape[0])
    if _f_only(a):
        parallel_for(_gather_cols_of_f, _blocks(C.shape[0]), a.T, idx, scale, C, n_chunks=chunks)
    else:
        parallel_for(_gather_cols_of, C.shape[0], a, idx, scale, C, n_chunks=chunks)


def _gather_rows(b, idx, scale, R):
    chunks = _chunks(R.size, R.shape[0])
    if _f_only(b):
        parallel_for(_gather_rows_of_f, _blocks(R.shape[1]), b.T, idx, scale, R, n_chunks=chunks)
    else:
        parallel_for(_gather_rows_of, R.shape[0], b, idx, scale, R, n_chunks=chunks)


def cr_gather_scale(a, b, idx, col_scale, row_scale, C, R):
    """``C[:, j] = a[:, idx[j]] * col_scale[j]``, ``R[j, :] = b[idx[j], :] * row_scale[j]``.

    2-D inputs in C or F order; ``C`` and ``R`` are caller-allocated (C-ordered). Sorted
    ``idx`` gives forward-only memory access. Performs no input validation.
    """
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    _gather_columns(a, idx, np.ascontiguousarray(col_scale, dtype=a.dtype), C)
    _gather_rows(b, idx, np.ascontiguousarray(row_scale, dtype=b.dtype), R)
