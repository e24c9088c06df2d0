"""Dispatch-layer self-test kernel (GPU, numba-cuda; runs under the CUDA simulator)."""

from numba import cuda

from ._cuda import current_stream, launch_config


@cuda.jit
def _axpy(alpha, x, y, out):
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, x.shape[0], stride):
        out[i] = alpha * x[i] + y[i]


def axpy(alpha, x, y, out, threads_per_block=None):
    """out = alpha * x + y for 1-D arrays. Performs no input validation."""
    blocks, threads = launch_config(x.shape[0], threads_per_block)
    _axpy[blocks, threads, current_stream()](alpha, x, y, out)
