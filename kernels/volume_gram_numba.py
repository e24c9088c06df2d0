"""Guarded Gram route for batched volumes: BLAS ``aᵀa``, then a checked Cholesky (numba).

For well-conditioned tall matrices the Gram matrix ``G = aᵀa`` (one BLAS product per
matrix, in the input's precision; for a few small matrices accumulated in float64 in the
kernel, which only makes the bound below smaller) followed by a float64 Cholesky ``G = RᵀR`` gives
``log vol = Σ log R_jj`` at a fraction of Householder QR's cost. Its accuracy depends
on the conditioning of the *equilibrated* Gram matrix ``H = D⁻¹GD⁻¹`` (D the column
norms), so each result comes with an a-posteriori test and is kept only when its
first-order error bound is no larger than Householder QR's (docs/theory/volume.md,
"The guarded Gram route"):

- Gram product plus Cholesky: ``|Δ log vol| ≤ ½(γ_n + γ_{k+1}) s²``,
- Householder QR: ``|Δ log vol| ≤ γ_{nk} s``, with ``s = Σ_j sqrt(G_jj (G⁻¹)_jj)``,

so the Gram result is accepted iff ``s ≤ 2nk/(n+k+1)`` (``γ_m = m·u`` in the precision of
``G``; s ≥ k always, s = k for orthogonal columns). ``(G⁻¹)_jj`` is the squared norm of
row j of ``R⁻¹``, from one triangular inverse (k³/6 flops against the product's nk²). A matrix whose Gram diagonal is non-finite or outside the safe range
(squares that under- or overflowed), whose Cholesky breaks down, or that fails the
test is flagged in ``ok`` for the caller to redo with QR.
"""

import functools
import math

import numba
import numpy as np

from ._fpe import ignore_fp_errors, restore_fp_errors
from ._jit import njit, slp_vectorizer
from ._threads import n_workers, parallel_for
from .volume_gram_single_numba import _HI64, _LO64, _checked_cholesky
from .volume_gram_single_numba import _product as gram_product

# G_jj in (lo, hi): no product overflowed, and gradual underflow (≤ 2^-150 resp.
# 2^-1075 per product) adds at most 1e-8 resp. 1e-27 of the γ_n term to any |ΔH_ij|.
_SAFE = {np.dtype(np.float32): (1e-30, 1e30), np.dtype(np.float64): (1e-280, 1e280)}
_PROD_LO, _PROD_HI = 1e-290, 1e290  # partial products of R_jj in here: normal
_EXP_MAX = 709.0  # math.exp overflows (OverflowError in plain Python) beyond ~709.78
# batch·n·k² below which threads cost more than they save (measured on the shared, loaded
# 2-core machine against slogdet(aᵀa) with default threads: 16 matrices of 128×32, 2.1M,
# took 1.21× its time on two threads and 0.82× on one; 16 of 2048×16, 8.4M, 1.17× and
# 1.04×)
_SERIAL_FLOPS = 10_000_000
_PLAIN = bool(numba.config.DISABLE_JIT)  # plain Python: NumPy scalars warn (see _gram_chunk)


_LANES = 8  # matrices side by side: one 8-wide SIMD register per written-out lane row
# A lane block of at most this many matrices is factored one matrix at a time: its idle
# lanes would cost more than the scalar loops (measured with bench.bench_volume)
_EACH_MAX = 4


@njit
def _load_lanes(g, b0, count, w, gdiag, bad, lo, hi):
    """w[i·k + m, l] = G_{b0+l}[i, m] for m >= i in float64; idle lanes get I.

    ``gdiag[j, l] = G_jj``; ``bad[l]`` is set where some G_jj is outside (lo, hi): a
    square under- or overflowed, or the matrix holds NaN/Inf.
    """
    k = g.shape[1]
    f = w.reshape(w.size)
    for lane in range(_LANES):
        if lane < count:
            gb = g[b0 + lane]
            for i in range(k):
                gi, x = gb[i], (i * k + i) * _LANES + lane
                for m in range(i, k):
                    f[x] = gi[m]
                    x += _LANES
        else:
            for i in range(k):
                x = (i * k + i) * _LANES + lane
                f[x] = 1.0
                for _ in range(i + 1, k):
                    x += _LANES
                    f[x] = 0.0
    for lane in range(_LANES):
        bad[lane] = False
        for i in range(k):
            d = f[(i * k + i) * _LANES + lane]
            gdiag[i, lane] = d
            if not lo < d < hi:
                bad[lane] = True


# The written-out lanes are what LLVM's SLP vectoriser turns into one SIMD operation
# (loops over a lane index are not vectorised here): keep the formatter away.
# fmt: off
@njit
def _cholesky_lanes(w, k, diag, inv, bad, lo, hi):
    """Upper Cholesky factors R of the 8 lane matrices in w, in place.

    Right-looking: step j scales row j and subtracts its rank-1 term from the trailing
    rows; every entry receives its updates in the order of a textbook inner-product
    Cholesky. ``diag[j, l] = R_jj``, ``inv[j, l] = 1 / R_jj``; a pivot R_jj² outside
    (lo, hi) (rank deficiency, breakdown, NaN) sets ``bad[l]`` and is replaced by 1 so
    the other lanes carry on.
    """
    f = w.reshape(w.size)
    for j in range(k):
        piv = w[j * k + j]
        for lane in range(_LANES):
            p = piv[lane]
            if not lo < p < hi:
                bad[lane] = True
                p = 1.0
            d = math.sqrt(p)
            piv[lane] = d
            diag[j, lane] = d
            inv[j, lane] = 1.0 / d
        q = inv[j]
        q0, q1, q2, q3, q4, q5, q6, q7 = q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7]
        for m in range(j + 1, k):
            x = w[j * k + m]
            x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7] = (
                x[0] * q0, x[1] * q1, x[2] * q2, x[3] * q3,
                x[4] * q4, x[5] * q5, x[6] * q6, x[7] * q7,
            )
        for i in range(j + 1, k):
            c = w[j * k + i]
            c0, c1, c2, c3, c4, c5, c6, c7 = c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
            # rows i and j from column i on, by flat offsets (row views cost more here)
            x, y = (i * k + i) * _LANES, (j * k + i) * _LANES
            for _ in range(i, k):
                f[x], f[x + 1], f[x + 2], f[x + 3], f[x + 4], f[x + 5], f[x + 6], f[x + 7] = (
                    f[x] - c0 * f[y], f[x + 1] - c1 * f[y + 1],
                    f[x + 2] - c2 * f[y + 2], f[x + 3] - c3 * f[y + 3],
                    f[x + 4] - c4 * f[y + 4], f[x + 5] - c5 * f[y + 5],
                    f[x + 6] - c6 * f[y + 6], f[x + 7] - c7 * f[y + 7],
                )
                x += _LANES
                y += _LANES


@njit
def _equilibrated_sums(w, k, inv, gdiag, t, s):
    """s[l] = Σ_j sqrt(G_jj (G⁻¹)_jj) for the 8 lane factors R in w.

    (G⁻¹)_jj is the squared norm of row j of R⁻¹, solved from x R = e_jᵀ by sweeps
    over the rows of R (t holds the running right-hand side).
    """
    s[:] = 0.0
    for j in range(k):
        t[j:, :] = 0.0
        t[j, :] = 1.0
        n0 = n1 = n2 = n3 = n4 = n5 = n6 = n7 = 0.0
        for m in range(j, k):
            tm, q = t[m], inv[m]
            x0, x1, x2, x3 = tm[0] * q[0], tm[1] * q[1], tm[2] * q[2], tm[3] * q[3]
            x4, x5, x6, x7 = tm[4] * q[4], tm[5] * q[5], tm[6] * q[6], tm[7] * q[7]
            n0, n1, n2, n3, n4, n5, n6, n7 = (
                n0 + x0 * x0, n1 + x1 * x1, n2 + x2 * x2, n3 + x3 * x3,
                n4 + x4 * x4, n5 + x5 * x5, n6 + x6 * x6, n7 + x7 * x7,
            )
            for i in range(m + 1, k):
                ti, r = t[i], w[m * k + i]
                ti[0], ti[1], ti[2], ti[3], ti[4], ti[5], ti[6], ti[7] = (
                    ti[0] - x0 * r[0], ti[1] - x1 * r[1], ti[2] - x2 * r[2], ti[3] - x3 * r[3],
                    ti[4] - x4 * r[4], ti[5] - x5 * r[5], ti[6] - x6 * r[6], ti[7] - x7 * r[7],
                )
        g = gdiag[j]
        s[0] += math.sqrt(g[0] * n0)
        s[1] += math.sqrt(g[1] * n1)
        s[2] += math.sqrt(g[2] * n2)
        s[3] += math.sqrt(g[3] * n3)
        s[4] += math.sqrt(g[4] * n4)
        s[5] += math.sqrt(g[5] * n5)
        s[6] += math.sqrt(g[6] * n6)
        s[7] += math.sqrt(g[7] * n7)
# fmt: on


@njit
def _hopeless(gdiag, inv, bad, count, limit):
    """True when no lane can pass: bad, or s ≥ Σ_j sqrt(G_jj) / R_jj above the limit."""
    for lane in range(count):
        if bad[lane]:
            continue
        low = 0.0  # (G⁻¹)_jj ≥ 1 / R_jj²
        for j in range(gdiag.shape[0]):
            low += math.sqrt(gdiag[j, lane]) * inv[j, lane]
        if low <= limit:
            return False
    return True


@njit
def _finish(diag, lane, take_log):
    """log vol = Σ log R_jj (one log of the product when it stays normal), or vol."""
    k = diag.shape[0]
    prod, in_range = 1.0, True
    for j in range(k):
        prod *= diag[j, lane]
        in_range = in_range and _PROD_LO < prod < _PROD_HI
    if in_range:
        return math.log(prod) if take_log else prod
    total = 0.0
    for j in range(k):
        total += math.log(diag[j, lane])
    if take_log:
        return total
    return math.exp(total) if total < _EXP_MAX else math.inf


@njit
def _lanes_block(g, g0, count, b0, out, ok, take_log, limit, lo, hi, scratch):
    """The checked Cholesky of the Gram matrices g[g0:g0+count] into out/ok[b0:b0+count].

    Returns the number of rejected matrices.
    """
    w, diag, inv, gdiag, t, s, bad = scratch
    if count <= _EACH_MAX:  # most lanes would idle: one matrix at a time
        return _each_block(g, g0, count, b0, out, ok, take_log, limit, lo, hi)
    _load_lanes(g, g0, count, w, gdiag, bad, lo, hi)
    _cholesky_lanes(w, g.shape[1], diag, inv, bad, lo, hi)
    if _hopeless(gdiag, inv, bad, count, limit):
        s[:] = math.inf
    else:
        _equilibrated_sums(w, g.shape[1], inv, gdiag, t, s)
    rejected = 0
    for lane in range(count):
        accept = not bad[lane] and s[lane] <= limit
        ok[b0 + lane] = accept
        if accept:
            out[b0 + lane] = _finish(diag, lane, take_log)
        else:
            rejected += 1
    return rejected


@njit
def _each_block(g, g0, count, b0, out, ok, take_log, limit, lo, hi):
    """As _lanes_block, one matrix at a time (the one-matrix kernel's checked Cholesky)."""
    k = g.shape[1]
    r, gd, inv, tk = np.empty((k, k)), np.empty(k), np.empty(k), np.empty(k)
    rejected = 0
    for mat in range(count):
        gb = g[g0 + mat]
        for i in range(k):  # the upper triangle, which is all the factorisation reads
            ri, gi = r[i], gb[i]
            for j in range(i, k):
                ri[j] = gi[j]
        value, accept = _checked_cholesky(r, gd, inv, tk, lo, hi, limit, take_log)
        ok[b0 + mat] = accept
        if accept:
            out[b0 + mat] = value
        else:
            rejected += 1
    return rejected


@njit
def _scratch(k):
    """Work arrays of one lane block: w, diag, inv, gdiag, t, s, bad."""
    return (np.empty((k * k, _LANES)), np.empty((k, _LANES)), np.empty((k, _LANES)),
            np.empty((k, _LANES)), np.empty((k, _LANES)), np.empty(_LANES),
            np.empty(_LANES, dtype=np.bool_))


@njit
def _gram_range(first, stop, g, out, ok, take_log, limit, lo, hi):
    """Blocks of 8 matrices first..stop-1 (argument order of _threads.parallel_for).

    Returns the number of rejected matrices.
    """
    batch = g.shape[0]
    scratch = _scratch(g.shape[1])
    rejected = 0
    for blk in range(first, stop):
        b0 = blk * _LANES
        rejected += _lanes_block(g, b0, min(_LANES, batch - b0), b0, out, ok, take_log,
                                 limit, lo, hi, scratch)
    return rejected


@njit
def _gram_range_data(first, stop, a, out, ok, take_log, limit):
    """As _gram_range, forming each block's Gram matrices here, in float64 (small n·k²)."""
    batch, k = a.shape[0], a.shape[2]
    scratch = _scratch(k)
    g = np.empty((_LANES, k, k))
    rejected = 0
    for blk in range(first, stop):
        b0 = blk * _LANES
        count = min(_LANES, batch - b0)
        for lane in range(count):
            gram_product(a[b0 + lane], g[lane])
        rejected += _lanes_block(g, 0, count, b0, out, ok, take_log, limit, _LO64, _HI64,
                                 scratch)
    return rejected


def acceptance_limit(n, k):
    """Largest accepted s = Σ_j sqrt(G_jj (G⁻¹)_jj): ``2nk/(n+k+1)`` (module docstring)."""
    return 2.0 * n * k / (n + k + 1)


# Below this n·k² (and for batches below _SERIAL_FLOPS) the products are formed in the
# kernel (float64) rather than by one BLAS call per matrix: no call overhead and no
# error-state switch (measured: 16 float64 64×8 matrices in 16 µs against 21 µs; at
# 512×8 BLAS is twice as fast per matrix)
PRODUCT_MAX_NK2 = 8192
# ... and above this batch·n·k² BLAS is faster per matrix once its call overhead is spread
# (1024 float32 64×8 matrices: 0.68 ms against 0.85 ms in the kernel)
PRODUCT_MAX_FLOPS = 2_000_000


def _gram_chunk(first, stop, a, out, ok, take_log, limit, in_kernel):
    """Blocks first..stop-1 of 8 matrices: their Gram products, then the checked Cholesky.

    The products are formed in the kernel where ``in_kernel``, else by BLAS. Returns the
    number of rejected matrices.
    """
    lo_b, hi_b = first * _LANES, min(stop * _LANES, a.shape[0])
    if lo_b or hi_b < a.shape[0]:  # a chunk of the batch (the whole one: no views to make)
        a, out, ok = a[lo_b:hi_b], out[lo_b:hi_b], ok[lo_b:hi_b]
    if in_kernel:
        if not _PLAIN:
            return _gram_range_data(0, stop - first, np.ascontiguousarray(a), out, ok,
                                    take_log, limit)
        # under NUMBA_DISABLE_JIT=1 the kernel's NumPy scalars warn on the over/underflow
        # that its range tests catch
        with np.errstate(all="ignore"):
            return _gram_range_data(0, stop - first, np.ascontiguousarray(a), out, ok,
                                    take_log, limit)
    return _blas_then_factor(stop - first, a, out, ok, take_log, limit, *_SAFE[a.dtype])


def _blas_then_factor(n_blocks, a, out, ok, take_log, limit, lo, hi):
    """``aᵀa`` by BLAS (syrk, in a's precision), then the checked Cholesky of every block.

    Over/underflow in the product is expected and caught by the range test on G_jj;
    NumPy's error state is per thread, hence set here. After the product only the
    kernel call is left (Python work after a large BLAS call runs on cold caches).
    """
    token = ignore_fp_errors()
    try:
        g = np.matmul(a.swapaxes(-1, -2), a)  # aᵀa: NumPy hands it to BLAS syrk
        if _PLAIN:  # the NumPy scalars of plain Python warn too
            return _gram_range(0, n_blocks, g, out, ok, take_log, limit, lo, hi)
    finally:
        restore_fp_errors(token)
    return _gram_range(0, n_blocks, g, out, ok, take_log, limit, lo, hi)


def gram_log_volume(a, out, ok, take_log=True):
    """(Log) volumes of a[b] (a: (batch, n, k), n > k >= 1) through the guarded Gram route.

    ``a`` is float32 or float64, any strides; ``out`` (batch,) receives the results of
    the accepted matrices, ``ok`` (batch, bool) says which: the others (ill-conditioned,
    non-finite, out of range) are left to the caller's QR. The Gram product runs in
    ``a``'s precision (BLAS, one product per matrix) or, for few small matrices
    (PRODUCT_MAX_NK2, PRODUCT_MAX_FLOPS), in float64 in the kernel; the Cholesky in
    float64. Large batches run in chunks on the
    kernel thread pool, Gram products included (NumPy releases the GIL in them).
    Returns the number of rejected matrices. Performs no input validation.
    """
    batch, n, k = a.shape
    n_blocks = (batch + _LANES - 1) // _LANES
    limit = 2.0 * n * k / (n + k + 1)  # acceptance_limit, inlined: this is per call
    take_log = bool(take_log)
    # few small matrices: products in the kernel (no per-call overhead to spread);
    # decided by the shape alone, so that results never depend on the thread count
    in_kernel = n * k * k <= PRODUCT_MAX_NK2 and batch * n * k * k < PRODUCT_MAX_FLOPS
    with slp_vectorizer():
        # the thread count (an environment read and a system call) only when it matters
        if batch * n * k * k >= _SERIAL_FLOPS and (workers := n_workers()) > 1:
            parallel_for(_gram_chunk, n_blocks, a, out, ok, take_log, limit, in_kernel,
                         n_chunks=min(n_blocks, 4 * workers))
            return batch - int(np.count_nonzero(ok))
        if in_kernel:
            return _gram_chunk(0, n_blocks, a, out, ok, take_log, limit, in_kernel)
        return _blas_then_factor(n_blocks, a, out, ok, take_log, limit, *_SAFE[a.dtype])


def gram_log_volume_plan(shape, dtype, take_log=True):
    """``run(a, out, ok) -> rejected``: gram_log_volume for one (batch, n, k) shape and dtype.

    Every decision gram_log_volume takes per call (product in the kernel or by BLAS, the
    acceptance limit, the safe range) is taken here once: on a few small matrices those
    Python steps cost as much as the volumes. Batches large enough to be threaded keep
    the per-call decision (the thread count may change). The kernels are compiled
    here, under `slp_vectorizer` as gram_log_volume's are.
    """
    batch, n, k = shape
    if batch * n * k * k >= _SERIAL_FLOPS:
        return functools.partial(gram_log_volume, take_log=take_log)
    n_blocks = (batch + _LANES - 1) // _LANES
    limit = acceptance_limit(n, k)
    take_log = bool(take_log)
    if n * k * k <= PRODUCT_MAX_NK2 and batch * n * k * k < PRODUCT_MAX_FLOPS:
        if _PLAIN:
            def run(a, out, ok, blocks=n_blocks):
                return _gram_chunk(0, blocks, a, out, ok, take_log, limit, True)
        else:
            def run(a, out, ok, blocks=n_blocks):
                return _gram_range_data(0, blocks, np.ascontiguousarray(a), out, ok,
                                        take_log, limit)
    else:
        lo, hi = _SAFE[np.dtype(dtype)]

        def run(a, out, ok, blocks=n_blocks):
            return _blas_then_factor(blocks, a, out, ok, take_log, limit, lo, hi)

    # compile (or load) the kernels this plan calls now, with LLVM's SLP vectoriser on,
    # so that no call pays for the switch: the machine code depends on the dtype alone,
    # so a small zero matrix does (it is simply rejected)
    with slp_vectorizer():
        run(np.zeros((1, k, k), dtype=dtype), np.empty(1, dtype=dtype),
            np.empty(1, dtype=np.bool_), blocks=1)
    return run
