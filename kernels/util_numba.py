"""Dispatch-layer self-test kernel (CPU)."""

from ._jit import njit


@njit
def _axpy(alpha, x, y, out):
    for i in range(x.shape[0]):
        out[i] = alpha * x[i] + y[i]


def axpy(alpha, x, y, out):
    """out = alpha * x + y for 1-D arrays. Performs no input validation."""
    _axpy(alpha, x, y, out)
