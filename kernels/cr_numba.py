"""CR sampling kernels (CPU, numba): fused norm pass and fused gather-and-scale.

Layout-aware: every loop walks memory contiguously. Column norms of a C-ordered matrix
are accumulated row by row into per-thread partial sums; row norms of a C-ordered
matrix are per-row reductions; F-ordered inputs are handled as the C-ordered transpose.
"""

import types

import numba
import numpy as np
from numba import prange

from ._jit import njit, pjit

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


def _row_norms(x, out):
    for i in prange(x.shape[0]):
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


def _col_norms(x, out, n_chunks):
    rows, cols = x.shape
    partial = np.zeros((n_chunks, cols), dtype=out.dtype)
    step = (rows + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        _add_squares(x, c * step, min(rows, (c + 1) * step), partial[c])
    for j in range(cols):
        s = partial[0, j]
        for c in range(1, n_chunks):
            s += partial[c, j]
        out[j] = np.sqrt(s)


def _chunks(rows):
    return max(1, min(numba.get_num_threads(), rows))


def _axis_norms(x, out, axis):
    """Norms along ``axis`` (0: of columns, 1: of rows) of a 2-D array, layout-aware."""
    if _f_only(x):
        x, axis = x.T, 1 - axis  # the transpose is C-ordered
    big = x.size >= _PARALLEL_MIN
    if axis == 1:
        (_row_norms_p if big else _row_norms_s)(x, out)
    else:
        (_col_norms_p if big else _col_norms_s)(x, out, _chunks(x.shape[0]) if big else 1)


def cr_norms(a, b, a_norms, b_norms):
    """Column norms of ``a`` into ``a_norms`` and row norms of ``b`` into ``b_norms``.

    One streaming read of each input. Either pair may be ``None`` (skipped). Performs
    no input validation.
    """
    if a is not None:
        _axis_norms(a, a_norms, 0)
    if b is not None:
        _axis_norms(b, b_norms, 1)


def _gather_rows_of(src, idx, scale, out):
    # out[j, :] = src[idx[j], :] * scale[j]: contiguous row copies, parallel over j
    for j in prange(idx.shape[0]):
        s = scale[j]
        row = src[idx[j]]
        dst = out[j]
        for k in range(row.shape[0]):
            dst[k] = row[k] * s


def _gather_cols_of(src, idx, scale, out):
    # out[i, j] = src[i, idx[j]] * scale[j] for C-ordered src, four rows per sweep (four
    # independent load streams hide latency); sorted idx -> forward access; parallel rows
    n, r = src.shape[0], idx.shape[0]
    for q in prange((n + 3) // 4):
        lo = 4 * q
        if lo + 4 <= n:
            r0, r1, r2, r3 = src[lo], src[lo + 1], src[lo + 2], src[lo + 3]
            d0, d1, d2, d3 = out[lo], out[lo + 1], out[lo + 2], out[lo + 3]
            for j in range(r):
                c, s = idx[j], scale[j]
                d0[j] = r0[c] * s
                d1[j] = r1[c] * s
                d2[j] = r2[c] * s
                d3[j] = r3[c] * s
        else:
            for i in range(lo, n):
                row, dst = src[i], out[i]
                for j in range(r):
                    dst[j] = row[idx[j]] * scale[j]


_BLOCK = 64


def _gather_cols_of_f(src_t, idx, scale, out):
    # src_t is the C-ordered transpose of an F-ordered src; out[i, j] = src_t[idx[j], i]
    # blocks of rows keep both the column reads and the row writes cache-resident
    n = src_t.shape[1]
    r = idx.shape[0]
    for blk in prange((n + _BLOCK - 1) // _BLOCK):
        lo = blk * _BLOCK
        hi = min(n, lo + _BLOCK)
        for j in range(r):
            col = src_t[idx[j]]
            s = scale[j]
            for i in range(lo, hi):
                out[i, j] = col[i] * s


def _gather_rows_of_f(src_t, idx, scale, out):
    # src_t is the C-ordered transpose of an F-ordered src; out[j, k] = src_t[k, idx[j]]
    # each row of src_t is swept forward once; writes stay inside a block of columns
    m = src_t.shape[0]
    r = idx.shape[0]
    for blk in prange((m + _BLOCK - 1) // _BLOCK):
        for k in range(blk * _BLOCK, min(m, (blk + 1) * _BLOCK)):
            row = src_t[k]
            for j in range(r):
                out[j, k] = row[idx[j]] * scale[j]


# serial and parallel builds of each loop nest, chosen by problem size
def _serial(fn):
    """A serial build under its own qualname, so numba's cache keeps both builds apart."""
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial")
    twin.__qualname__ = fn.__qualname__ + "_serial"
    return njit(twin)


_row_norms_s, _row_norms_p = _serial(_row_norms), pjit(_row_norms)
_col_norms_s, _col_norms_p = _serial(_col_norms), pjit(_col_norms)
_GATHER = {
    name: (_serial(fn), pjit(fn))
    for name, fn in [
        ("rows", _gather_rows_of),
        ("cols", _gather_cols_of),
        ("cols_f", _gather_cols_of_f),
        ("rows_f", _gather_rows_of_f),
    ]
}


def _gather(name, src, idx, scale, out):
    serial, parallel = _GATHER[name]
    (parallel if out.size >= _PARALLEL_MIN else serial)(src, idx, scale, out)


def _f_only(x):
    return x.flags.f_contiguous and not x.flags.c_contiguous


def _gather_columns(a, idx, scale, C):
    if _f_only(a):
        _gather("cols_f", a.T, idx, scale, C)
    else:
        _gather("cols", a, idx, scale, C)


def _gather_rows(b, idx, scale, R):
    if _f_only(b):
        _gather("rows_f", b.T, idx, scale, R)
    else:
        _gather("rows", b, idx, scale, R)


def cr_gather_scale(a, b, idx, col_scale, row_scale, C, R):
    """``C[:, j] = a[:, idx[j]] * col_scale[j]``, ``R[j, :] = b[idx[j], :] * row_scale[j]``.

    2-D inputs in C or F order; ``C`` and ``R`` are caller-allocated (C-ordered). Sorted
    ``idx`` gives forward-only memory access. Performs no input validation.
    """
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    _gather_columns(a, idx, np.ascontiguousarray(col_scale, dtype=a.dtype), C)
    _gather_rows(b, idx, np.ascontiguousarray(row_scale, dtype=b.dtype), R)
