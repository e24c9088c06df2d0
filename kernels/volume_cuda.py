"""Batched Gram volumes on the GPU (numba-cuda, CuPy arrays): one thread per matrix.

The same algorithms as ``volume_numba`` in float64: the cross product for 3×2, and
Householder QR (``dlarfg`` form) with a dnrm2-style scaled norm on a thread-local copy
of at most ``MAX_NK`` entries otherwise (the caller routes bigger matrices to CuPy's
QR). Values are read through ``float()`` so the code also runs, without NumPy scalar
warnings, in the CUDA simulator.
"""

import math

import numba
from numba import cuda

from ._cuda import current_stream, launch_config

MAX_NK = 256  # thread-local copy: 2 KiB of local memory per thread
MAX_K = 16

_SQ_LO, _SQ_HI = 1e-280, 1e280
_PROD_LO, _PROD_HI = 1e-290, 1e290
_EXP_MAX = 709.0


@cuda.jit(device=True)
def _norm(w, base, count):
    """Euclidean norm of w[base:base+count], rescaled when the squares leave range."""
    ss = 0.0
    for i in range(count):
        v = float(w[base + i])
        ss += v * v
    if _SQ_LO < ss < _SQ_HI:
        return math.sqrt(ss)
    scale = 0.0
    for i in range(count):
        v = abs(float(w[base + i]))
        if v > scale or v != v:
            scale = v
    if scale == 0.0 or scale != scale or scale == math.inf:
        return scale
    ss = 0.0
    for i in range(count):
        t = float(w[base + i]) / scale
        ss += t * t
    return scale * math.sqrt(ss)


@cuda.jit(device=True)
def _reflect(w, n, k, j, norm):
    """Apply the Householder reflector of column j (rows j..n-1) to columns j+1..k-1."""
    alpha = float(w[j * n + j])
    beta = -norm if alpha >= 0.0 else norm
    denom = alpha - beta  # |denom| = |alpha| + norm > 0
    tau = (beta - alpha) / beta
    for i in range(j + 1, n):
        w[j * n + i] = float(w[j * n + i]) / denom
    for c in range(j + 1, k):
        s = float(w[c * n + j])
        for i in range(j + 1, n):
            s += float(w[j * n + i]) * float(w[c * n + i])
        s *= tau
        w[c * n + j] = float(w[c * n + j]) - s
        for i in range(j + 1, n):
            w[c * n + i] = float(w[c * n + i]) - s * float(w[j * n + i])


@cuda.jit(device=True)
def _log_volume(a, b, w):
    """(log prod |R_jj|, prod |R_jj| or -inf if a partial product left the safe range)
    of a[b] (n×k, n >= k), by Householder QR on the local copy w."""
    n, k = a.shape[1], a.shape[2]
    guard = 0.0  # NaN if any entry is NaN or Inf
    for j in range(k):
        for i in range(n):
            v = float(a[b, i, j])
            w[j * n + i] = v
            guard += v * 0.0
    total, prod = 0.0, 1.0
    for j in range(k):
        norm = _norm(w, j * n + j, n - j)
        if norm == 0.0:
            return -math.inf + guard, 0.0
        if norm != norm or norm == math.inf:
            return math.nan, math.nan
        total += math.log(norm)
        prod = prod * norm if _PROD_LO < prod * norm < _PROD_HI else -1.0 * math.inf
        _reflect(w, n, k, j, norm)
    return total + guard, prod + guard


@cuda.jit(device=True)
def _cross_3x2(a, b):
    """Squared norm of the cross product of the two columns of a[b]."""
    x0, x1, x2 = float(a[b, 0, 0]), float(a[b, 1, 0]), float(a[b, 2, 0])
    y0, y1, y2 = float(a[b, 0, 1]), float(a[b, 1, 1]), float(a[b, 2, 1])
    c0 = x1 * y2 - x2 * y1
    c1 = x2 * y0 - x0 * y2
    c2 = x0 * y1 - x1 * y0
    return c0 * c0 + c1 * c1 + c2 * c2


@cuda.jit
def _volumes(a, out, take_log):
    w = cuda.local.array(MAX_NK, numba.float64)
    n, k = a.shape[1], a.shape[2]
    for b in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        if n == 3 and k == 2:
            ss = _cross_3x2(a, b)
            if _SQ_LO < ss < _SQ_HI:  # else: NaN/Inf, rank deficiency or extreme scale
                out[b] = 0.5 * math.log(ss) if take_log else math.sqrt(ss)
                continue
        lv, prod = _log_volume(a, b, w)
        if take_log or lv != lv:
            out[b] = lv
        elif prod >= 0.0:  # every partial product stayed normal: no digits lost
            out[b] = prod
        elif lv < _EXP_MAX:
            out[b] = math.exp(lv) if lv > -math.inf else 0.0
        else:
            out[b] = math.inf


def log_gram_volume(a, out, take_log=True, threads_per_block=None):
    """Write the (log) Gram volume of each a[b] (a: (batch, n, k), n >= k >= 1,
    n·k <= MAX_NK) into out (batch,). CuPy arrays (NumPy under the simulator); any
    strides; no input validation.
    """
    if a.shape[0] == 0:
        return
    blocks, threads = launch_config(a.shape[0], threads_per_block)
    _volumes[blocks, threads, current_stream()](a, out, bool(take_log))
