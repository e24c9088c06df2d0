"""Batched Gram volumes (log or value) on the CPU with numba, parallel over matrices.

Large batches run in chunks on the kernel thread pool (``_threads.parallel_for``).

All arithmetic is float64 (float32 inputs too). Per matrix, by shape:

- 3×2: the cross-product norm ``‖x × y‖`` (each component has absolute error
  ~ eps‖x‖‖y‖, so the area has relative error ~ eps·κ; no Gram matrix);
- otherwise: Householder QR (LAPACK ``dlarfg`` form, v₀ = 1) on a local copy, 16
  matrices side by side so the inner loops run over independent lanes; the volume
  is ``prod |R_jj|``. For n×2 that is a single reflection (one orthogonalisation
  step) and a norm.

Fast paths run unscaled and are accepted only when every intermediate square or
product stays in a safe range; otherwise that one matrix is redone by the scaled
Householder path, so under/overflow never corrupts a result and the log stays finite.
A NaN/Inf anywhere in a matrix makes its result NaN (the caller checks the output).
Written to also run as plain Python (``NUMBA_DISABLE_JIT=1``): no log(0), no exp
overflow, no division by zero.
"""

import math

import numpy as np

from ._jit import njit, slp_vectorizer
from ._threads import n_workers, parallel_for

_SQ_LO, _SQ_HI = 1e-280, 1e280  # sums of squares in here: their sqrt lost nothing
_PROD_LO, _PROD_HI = 1e-290, 1e290  # partial products of |R_jj| in here: normal
_EXP_MAX = 709.0  # math.exp overflows (OverflowError in plain Python) beyond ~709.78


@njit
def _finish(prod, in_range, diag, k, take_log):
    """Volume or log-volume from prod(diag) (trusted when in_range) or sum(log diag)."""
    if in_range:
        return math.log(prod) if take_log else prod
    total = 0.0
    for j in range(k):
        if diag[j] == 0.0:
            return -math.inf if take_log else 0.0
        total += math.log(diag[j])
    if take_log or total != total:
        return total
    return math.exp(total) if total < _EXP_MAX else math.inf


@njit
def _column_norm(w, j, start, n):
    """Euclidean norm of w[j, start:n], scaled (dnrm2-style) when squares leave range."""
    ss = 0.0
    for i in range(start, n):
        ss += w[j, i] * w[j, i]
    if _SQ_LO < ss < _SQ_HI:
        return math.sqrt(ss)
    scale = 0.0
    for i in range(start, n):
        v = abs(w[j, i])
        if v > scale or v != v:
            scale = v
    if scale == 0.0 or scale != scale or scale == math.inf:
        return scale
    ss = 0.0
    for i in range(start, n):
        t = w[j, i] / scale
        ss += t * t
    return scale * math.sqrt(ss)


@njit
def _householder_volume(a, b, w, diag, take_log):
    """Householder QR of a[b] (n×k, n >= k) on the local copy w (k×n)."""
    n, k = a.shape[1], a.shape[2]
    guard = 0.0  # becomes NaN if any entry is NaN or Inf
    for j in range(k):
        for i in range(n):
            v = np.float64(a[b, i, j])
            w[j, i] = v
            guard += v * 0.0
    prod, in_range = 1.0, True
    for j in range(k):
        norm = _column_norm(w, j, j, n)
        diag[j] = norm
        prod *= norm
        in_range = in_range and _PROD_LO < prod < _PROD_HI
        if norm == 0.0 or norm != norm or norm == math.inf:
            return _finish(prod, False, diag, j + 1, take_log) + guard
        alpha = w[j, j]
        beta = -norm if alpha >= 0.0 else norm
        denom = alpha - beta  # |denom| = |alpha| + norm: no cancellation
        tau = (beta - alpha) / beta
        for i in range(j + 1, n):
            w[j, i] /= denom
        for c in range(j + 1, k):
            s = w[c, j]
            for i in range(j + 1, n):
                s += w[j, i] * w[c, i]
            s *= tau
            w[c, j] -= s
            for i in range(j + 1, n):
                w[c, i] -= s * w[j, i]
    return _finish(prod, in_range, diag, k, take_log) + guard


@njit
def _cross_lanes(a, b0, count, ss):
    """ss[l] = ‖x × y‖² for the 3×2 matrices a[b0 + l] (the area, squared)."""
    for lane in range(count):
        b = b0 + lane
        x0, x1, x2 = np.float64(a[b, 0, 0]), np.float64(a[b, 1, 0]), np.float64(a[b, 2, 0])
        y0, y1, y2 = np.float64(a[b, 0, 1]), np.float64(a[b, 1, 1]), np.float64(a[b, 2, 1])
        c0 = x1 * y2 - x2 * y1
        c1 = x2 * y0 - x0 * y2
        c2 = x0 * y1 - x1 * y0
        ss[lane] = c0 * c0 + c1 * c1 + c2 * c2


_LANES = 16  # matrices side by side in the lane path (see _householder_lanes)


# The written-out lanes read best 4-8 per line: keep the formatter away.
# fmt: off
@njit
def _householder_lanes(a, b0, w, t, ss, prod):
    """Unscaled Householder QR of the 16 matrices a[b0:b0+16] side by side.

    ``w[j, i, l]`` is entry (i, j) of matrix l. The hot lane loops are written out as
    16 scalars: the accumulators stay in registers, the 16 chains run in parallel and
    LLVM's SLP vectoriser packs them into SIMD registers (lane loops over arrays are
    neither vectorised by numba at this trip count nor kept out of memory, the arrays
    possibly aliasing; measured 1.6x slower for 16×4). ``t`` is (4, 16) scratch.
    ``prod[l]`` gets prod |R_jj|; ``ss[l]`` is set to 0 (outside the safe range) if
    some |R_jj|² or partial product left it.
    """
    n, k = a.shape[1], a.shape[2]
    # 1-D/2-D views throughout: numba's 3-D index arithmetic costs more than the flops
    for lane in range(_LANES):
        m = a[b0 + lane]
        for j in range(k):
            wj = w[j]
            for i in range(n):
                wj[i, lane] = m[i, j]
    norm2, inv, tau = t[0], t[1], t[2]
    ss[:] = 1.0
    prod[:] = 1.0
    for j in range(k):
        wj = w[j]
        (
            s0, s1, s2, s3, s4, s5, s6, s7,
            s8, s9, s10, s11, s12, s13, s14, s15,
        ) = (
            0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
        )
        for i in range(j, n):
            v = wj[i]
            (
                v0, v1, v2, v3, v4, v5, v6, v7,
                v8, v9, v10, v11, v12, v13, v14, v15,
            ) = (
                v[0], v[1], v[2], v[3],
                v[4], v[5], v[6], v[7],
                v[8], v[9], v[10], v[11],
                v[12], v[13], v[14], v[15],
            )
            (
                s0, s1, s2, s3, s4, s5, s6, s7,
                s8, s9, s10, s11, s12, s13, s14, s15,
            ) = (
                s0 + v0 * v0, s1 + v1 * v1, s2 + v2 * v2, s3 + v3 * v3,
                s4 + v4 * v4, s5 + v5 * v5, s6 + v6 * v6, s7 + v7 * v7,
                s8 + v8 * v8, s9 + v9 * v9, s10 + v10 * v10, s11 + v11 * v11,
                s12 + v12 * v12, s13 + v13 * v13, s14 + v14 * v14, s15 + v15 * v15,
            )
        (
            norm2[0], norm2[1], norm2[2], norm2[3],
            norm2[4], norm2[5], norm2[6], norm2[7],
            norm2[8], norm2[9], norm2[10], norm2[11],
            norm2[12], norm2[13], norm2[14], norm2[15],
        ) = (
            s0, s1, s2, s3, s4, s5, s6, s7,
            s8, s9, s10, s11, s12, s13, s14, s15,
        )
        pivot = wj[j]
        for lane in range(_LANES):
            norm = math.sqrt(norm2[lane])
            prod[lane] *= norm
            if not (_SQ_LO < norm2[lane] < _SQ_HI and _PROD_LO < prod[lane] < _PROD_HI):
                ss[lane] = 0.0  # unsafe: redo this matrix on the scaled path
            alpha = pivot[lane]
            beta = -math.copysign(norm, alpha)
            denom = alpha - beta  # |denom| = |alpha| + norm: no cancellation
            inv[lane] = 1.0 / denom if denom != 0.0 else 0.0
            tau[lane] = (beta - alpha) / beta if beta != 0.0 else 0.0
        if j == k - 1:  # the last column: only its norm was needed
            break
        (
            q0, q1, q2, q3, q4, q5, q6, q7,
            q8, q9, q10, q11, q12, q13, q14, q15,
        ) = (
            inv[0], inv[1], inv[2], inv[3],
            inv[4], inv[5], inv[6], inv[7],
            inv[8], inv[9], inv[10], inv[11],
            inv[12], inv[13], inv[14], inv[15],
        )
        for i in range(j + 1, n):  # v = [1, x[1:] / (alpha - beta)]
            v = wj[i]
            (
                v0, v1, v2, v3, v4, v5, v6, v7,
                v8, v9, v10, v11, v12, v13, v14, v15,
            ) = (
                v[0], v[1], v[2], v[3],
                v[4], v[5], v[6], v[7],
                v[8], v[9], v[10], v[11],
                v[12], v[13], v[14], v[15],
            )
            (
                v[0], v[1], v[2], v[3],
                v[4], v[5], v[6], v[7],
                v[8], v[9], v[10], v[11],
                v[12], v[13], v[14], v[15],
            ) = (
                v0 * q0, v1 * q1, v2 * q2, v3 * q3,
                v4 * q4, v5 * q5, v6 * q6, v7 * q7,
                v8 * q8, v9 * q9, v10 * q10, v11 * q11,
                v12 * q12, v13 * q13, v14 * q14, v15 * q15,
            )
        for c in range(j + 1, k):  # apply I - tau v vᵀ to column c
            wc = w[c]
            top = wc[j]
            (
                d0, d1, d2, d3, d4, d5, d6, d7,
                d8, d9, d10, d11, d12, d13, d14, d15,
            ) = (
                top[0], top[1], top[2], top[3],
                top[4], top[5], top[6], top[7],
                top[8], top[9], top[10], top[11],
                top[12], top[13], top[14], top[15],
            )
            for i in range(j + 1, n):
                v, x = wj[i], wc[i]
                (
                    d0, d1, d2, d3, d4, d5, d6, d7,
                    d8, d9, d10, d11, d12, d13, d14, d15,
                ) = (
                    d0 + v[0] * x[0], d1 + v[1] * x[1],
                    d2 + v[2] * x[2], d3 + v[3] * x[3],
                    d4 + v[4] * x[4], d5 + v[5] * x[5],
                    d6 + v[6] * x[6], d7 + v[7] * x[7],
                    d8 + v[8] * x[8], d9 + v[9] * x[9],
                    d10 + v[10] * x[10], d11 + v[11] * x[11],
                    d12 + v[12] * x[12], d13 + v[13] * x[13],
                    d14 + v[14] * x[14], d15 + v[15] * x[15],
                )
            (
                d0, d1, d2, d3, d4, d5, d6, d7,
                d8, d9, d10, d11, d12, d13, d14, d15,
            ) = (
                d0 * tau[0], d1 * tau[1], d2 * tau[2], d3 * tau[3],
                d4 * tau[4], d5 * tau[5], d6 * tau[6], d7 * tau[7],
                d8 * tau[8], d9 * tau[9], d10 * tau[10], d11 * tau[11],
                d12 * tau[12], d13 * tau[13], d14 * tau[14], d15 * tau[15],
            )
            (
                top[0], top[1], top[2], top[3],
                top[4], top[5], top[6], top[7],
                top[8], top[9], top[10], top[11],
                top[12], top[13], top[14], top[15],
            ) = (
                top[0] - d0, top[1] - d1, top[2] - d2, top[3] - d3,
                top[4] - d4, top[5] - d5, top[6] - d6, top[7] - d7,
                top[8] - d8, top[9] - d9, top[10] - d10, top[11] - d11,
                top[12] - d12, top[13] - d13, top[14] - d14, top[15] - d15,
            )
            for i in range(j + 1, n):
                v, x = wj[i], wc[i]
                (
                    v0, v1, v2, v3, v4, v5, v6, v7,
                    v8, v9, v10, v11, v12, v13, v14, v15,
                ) = (
                    v[0], v[1], v[2], v[3],
                    v[4], v[5], v[6], v[7],
                    v[8], v[9], v[10], v[11],
                    v[12], v[13], v[14], v[15],
                )
                (
                    x0, x1, x2, x3, x4, x5, x6, x7,
                    x8, x9, x10, x11, x12, x13, x14, x15,
                ) = (
                    x[0], x[1], x[2], x[3],
                    x[4], x[5], x[6], x[7],
                    x[8], x[9], x[10], x[11],
                    x[12], x[13], x[14], x[15],
                )
                (
                    x[0], x[1], x[2], x[3],
                    x[4], x[5], x[6], x[7],
                    x[8], x[9], x[10], x[11],
                    x[12], x[13], x[14], x[15],
                ) = (
                    x0 - d0 * v0, x1 - d1 * v1, x2 - d2 * v2, x3 - d3 * v3,
                    x4 - d4 * v4, x5 - d5 * v5, x6 - d6 * v6, x7 - d7 * v7,
                    x8 - d8 * v8, x9 - d9 * v9, x10 - d10 * v10, x11 - d11 * v11,
                    x12 - d12 * v12, x13 - d13 * v13, x14 - d14 * v14, x15 - d15 * v15,
                )
# fmt: on


@njit
def _volume_blocks(a, out, take_log, first, stop, lanes):
    """Volumes of the matrices in blocks first..stop-1 of ``lanes`` matrices each."""
    batch, n, k = a.shape
    w, t = np.zeros((k, n, _LANES)), np.zeros((4, _LANES))
    ss, prod = np.zeros(lanes), np.ones(lanes)
    w1, diag = np.zeros((k, n)), np.zeros(k)
    for blk in range(first, stop):
        b0 = blk * lanes
        count = min(lanes, batch - b0)
        if n == 3 and k == 2:
            _cross_lanes(a, b0, count, ss)
            for lane in range(count):
                prod[lane] = math.sqrt(ss[lane])
        elif count == lanes:
            _householder_lanes(a, b0, w, t, ss, prod)
        else:  # the last, partial block: one matrix at a time
            ss[:count] = 0.0
        for lane in range(count):
            if _SQ_LO < ss[lane] < _SQ_HI:
                out[b0 + lane] = math.log(prod[lane]) if take_log else prod[lane]
            else:  # NaN/Inf input, rank deficiency or under/overflow: careful path
                out[b0 + lane] = _householder_volume(a, b0 + lane, w1, diag, take_log)


_SERIAL_FLOPS = 200_000  # smaller batches run serially: threads cost more than they save


def _volume_range(first, stop, a, out, take_log, lanes):
    # blocks first..stop-1, in the argument order of _threads.parallel_for; errstate is
    # per thread (NUMBA_DISABLE_JIT=1: NumPy scalars warn on the inf/NaN that the
    # safe-range checks catch), hence here and not around the parallel_for call
    with np.errstate(all="ignore"):
        _volume_blocks(a, out, take_log, first, stop, lanes)


def log_gram_volume(a, out, take_log=True):
    """Write the (log) Gram volume of each a[b] (a: (batch, n, k), n >= k >= 1) into out.

    ``a`` may have any strides (a strided view is copied once, which also keeps the
    compiled specialisations to C layout) and be float32 or float64; ``out`` is
    (batch,). Performs no input validation.
    """
    a = np.ascontiguousarray(a)  # no copy when already C-contiguous
    batch, n, k = a.shape
    lanes = 64 if (n, k) == (3, 2) else _LANES  # matrices per block
    n_blocks = (batch + lanes - 1) // lanes
    n_chunks = min(n_blocks, 8 * n_workers())
    if n_chunks > 0:
        # errstate only matters under NUMBA_DISABLE_JIT=1, where scalars are NumPy's and
        # warn on the inf/NaN that the safe-range checks are designed to catch.
        with np.errstate(all="ignore"), slp_vectorizer():
            if batch * n * k * k < _SERIAL_FLOPS:
                _volume_blocks(a, out, bool(take_log), 0, n_blocks, lanes)
            else:
                # many small chunks on the thread pool, the caller taking its share: a
                # busy core delays nothing (numba's static prange schedule waited for it;
                # measured in bench/peers/compare_volume.py, e.g. float32 2.1x slower
                # than float64 and 64×8 4.6x slower than slogdet, against 0.8-1.0x and
                # 0.5x on the pool in the same session)
                parallel_for(
                    _volume_range, n_blocks, a, out, bool(take_log), lanes, n_chunks=n_chunks
                )
