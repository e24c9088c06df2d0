"""CR sampling kernels (GPU, numba-cuda): norm pass and gather-and-scale on CuPy arrays.

Launchers take CuPy arrays on a GPU (NumPy arrays under ``NUMBA_ENABLE_CUDASIM=1``).
Every kernel uses grid-stride loops; consecutive threads touch consecutive addresses
for C-ordered inputs, and F-ordered inputs are handled as their C-ordered transpose.
"""

import numba
from numba import cuda

from ._cuda import current_stream, launch_config

_TPB_MAX = 256  # shared-memory size of the row reduction; launch_config never exceeds it


@cuda.jit
def _col_norms(x, out):
    # one thread per column: at each row step the warp reads one contiguous segment
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for j in range(start, x.shape[1], stride):
        s = 0.0
        for i in range(x.shape[0]):
            s += x[i, j] * x[i, j]
        out[j] = s**0.5


@cuda.jit
def _row_norms(x, out):
    # one block per row: threads stride along the row, then a shared-memory tree sum
    buf = cuda.shared.array(_TPB_MAX, dtype=numba.float64)
    tid, nthreads = cuda.threadIdx.x, cuda.blockDim.x
    for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
        s = 0.0
        for j in range(tid, x.shape[1], nthreads):
            s += x[i, j] * x[i, j]
        buf[tid] = s
        cuda.syncthreads()
        half = nthreads // 2
        while half > 0:
            if tid < half:
                buf[tid] += buf[tid + half]
            cuda.syncthreads()
            half //= 2
        if tid == 0:
            out[i] = buf[0] ** 0.5
        cuda.syncthreads()


def _f_only(x):
    return x.flags.f_contiguous and not x.flags.c_contiguous


def _axis_norms(x, out, axis, threads_per_block):
    if _f_only(x):
        x, axis = x.T, 1 - axis
    stream = current_stream()
    if axis == 0:
        blocks, threads = launch_config(x.shape[1], threads_per_block)
        _col_norms[blocks, threads, stream](x, out)
    else:
        _, threads = launch_config(x.shape[1], threads_per_block)
        blocks, _ = launch_config(x.shape[0], 1)  # one block per row, grid-stride beyond
        _row_norms[blocks, threads, stream](x, out)


def cr_norms(a, b, a_norms, b_norms, threads_per_block=None):
    """Column norms of ``a`` into ``a_norms``, row norms of ``b`` into ``b_norms``.

    Either pair may be ``None``. ``threads_per_block`` must be a power of two <= 256.
    Performs no input validation.
    """
    if a is not None:
        _axis_norms(a, a_norms, 0, threads_per_block)
    if b is not None:
        _axis_norms(b, b_norms, 1, threads_per_block)


@cuda.jit
def _gather_cols(src, idx, scale, out, column_major):
    # out[i, j] = src[i, idx[j]] * scale[j]; the flat order follows src's fast axis
    n, r = out.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for k in range(start, n * r, stride):
        if column_major:
            i, j = k % n, k // n
        else:
            i, j = k // r, k % r
        out[i, j] = src[i, idx[j]] * scale[j]


@cuda.jit
def _gather_rows(src, idx, scale, out, column_major):
    # out[j, c] = src[idx[j], c] * scale[j]
    r, m = out.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for k in range(start, r * m, stride):
        if column_major:
            j, c = k % r, k // r
        else:
            j, c = k // m, k % m
        out[j, c] = src[idx[j], c] * scale[j]


def cr_gather_scale(a, b, idx, col_scale, row_scale, C, R, threads_per_block=None):
    """``C[:, j] = a[:, idx[j]] * col_scale[j]``, ``R[j, :] = b[idx[j], :] * row_scale[j]``.

    2-D inputs in any layout; ``C`` and ``R`` caller-allocated. Performs no validation.
    """
    stream = current_stream()
    blocks, threads = launch_config(C.shape[0] * C.shape[1], threads_per_block)
    _gather_cols[blocks, threads, stream](a, idx, col_scale, C, _f_only(a))
    blocks, threads = launch_config(R.shape[0] * R.shape[1], threads_per_block)
    _gather_rows[blocks, threads, stream](b, idx, row_scale, R, _f_only(b))
