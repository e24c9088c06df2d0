"""The guarded Gram route for one matrix at a time (numba): no idle SIMD lanes, no BLAS call.

``volume_gram_numba`` runs 8 matrices side by side, which a single matrix pays for with
7 idle lanes, and makes one BLAS call per Gram product, which for a 64×8 matrix costs as
much as the product. Here each matrix is handled alone (the batched route uses the same
checked Cholesky for its partial lane blocks):

- ``G = aᵀa`` accumulated in float64 (float32 input too) by rank-one row updates, unless
  the caller passes a Gram matrix it formed itself (BLAS ``syrk`` wins for large
  ``n·k²``);
- the Cholesky factor ``G = RᵀR`` in float64, right-looking, its inner loops over
  contiguous row tails (which LLVM vectorises; a loop starting at a non-zero index is not);
- the same acceptance test as the batched route (docs/theory/volume.md, "The guarded Gram
  route"): ``s = Σ_j sqrt(G_jj (G⁻¹)_jj) ≤ 2nk/(n+k+1)``, with ``(G⁻¹)_jj`` the squared
  norm of row j of ``R⁻¹``. The bound ``½(γ_n + γ_{k+1}) s²`` behind it holds for any
  summation order of the product; a float64 product of float32 data only makes it
  smaller, so the test stays conservative.

A matrix is rejected (``ok`` False, left to the caller's QR) when some ``G_jj`` or pivot
is outside the safe range, non-finite (every NaN/Inf entry reaches its column's
``G_jj``), or when the test fails. Written to also run as plain Python
(``NUMBA_DISABLE_JIT=1``).
"""

import math

import numba
import numpy as np

from ._fpe import ignore_fp_errors, restore_fp_errors
from ._jit import njit

_PROD_LO, _PROD_HI = 1e-290, 1e290  # partial products of R_jj in here: normal
_EXP_MAX = 709.0  # math.exp overflows (OverflowError in plain Python) beyond ~709.78
# G_jj of a float64 product in here: no square over- or underflowed (see volume_gram_numba)
_LO64, _HI64 = 1e-280, 1e280
_LO32, _HI32 = 1e-30, 1e30  # the same for a float32 product (BLAS on float32 data)


@njit
def _product(m, g):
    """g = mᵀm (m: n×k, g: k×k float64, both triangles), four rows of m per pass.

    Each row of ``g`` receives ``(x₀r₀ + x₁r₁) + (x₂r₂ + x₃r₃)``: one load and store of
    it per four rows of m, and full rows (not the upper tails, which are shorter and
    ragged) vectorise best: 1.4x faster at 512×8 for the redundant half.
    """
    n, k = m.shape
    g[:] = 0.0
    i = 0
    while i + 4 <= n:
        r0, r1, r2, r3 = m[i], m[i + 1], m[i + 2], m[i + 3]
        for p in range(k):
            x0, x1 = np.float64(r0[p]), np.float64(r1[p])
            x2, x3 = np.float64(r2[p]), np.float64(r3[p])
            gp = g[p]
            for q in range(k):
                gp[q] += (x0 * r0[q] + x1 * r1[q]) + (x2 * r2[q] + x3 * r3[q])
        i += 4
    while i < n:
        r0 = m[i]
        for p in range(k):
            x0 = np.float64(r0[p])
            gp = g[p]
            for q in range(k):
                gp[q] += x0 * r0[q]
        i += 1


@njit
def _cholesky(r, inv, lo, hi):
    """Upper Cholesky factor of the upper triangle of r in place; False on breakdown.

    Right-looking in panels of four rows: a trailing row receives the four rank-one
    terms of a panel in one pass, ``(c₀r₀ + c₁r₁) + (c₂r₂ + c₃r₃)`` (one load and store
    of it per four terms). Any order of these sums has the error bound used by the
    acceptance test. ``inv[j] = 1 / R_jj``; a pivot outside (lo, hi) (rank deficiency,
    breakdown, NaN) stops the factorisation.
    """
    k = r.shape[0]
    j = 0
    while j < k:
        b = min(4, k - j)
        for piv in range(j, j + b):  # the panel's own rows, one at a time
            rp = r[piv]
            p = rp[piv]
            if not lo < p < hi:
                return False
            d = math.sqrt(p)
            rp[piv] = d
            q = 1.0 / d
            inv[piv] = q
            tail = rp[piv + 1:]
            for m in range(k - piv - 1):
                tail[m] *= q
            for i in range(piv + 1, j + b):
                ri, rv = r[i, i:], rp[i:]
                c = rv[0]
                for m in range(k - i):
                    ri[m] -= c * rv[m]
        if b == 4:  # else this was the last panel
            r0, r1, r2, r3 = r[j], r[j + 1], r[j + 2], r[j + 3]
            for i in range(j + 4, k):
                c0, c1, c2, c3 = r0[i], r1[i], r2[i], r3[i]
                ri, t0, t1, t2, t3 = r[i, i:], r0[i:], r1[i:], r2[i:], r3[i:]
                for m in range(k - i):
                    ri[m] -= (c0 * t0[m] + c1 * t1[m]) + (c2 * t2[m] + c3 * t3[m])
        j += b
    return True


@njit
def _inverse_row_norm2(r, inv, j, t):
    """‖row j of R⁻¹‖² = (G⁻¹)_jj, from x R = e_jᵀ swept over the rows of R, four at once."""
    k = r.shape[0]
    t[j:] = 0.0
    t[j] = 1.0
    norm2 = 0.0
    m = j
    while m + 4 <= k:
        r0, r1, r2, r3 = r[m], r[m + 1], r[m + 2], r[m + 3]
        x0 = t[m] * inv[m]
        t[m + 1] -= x0 * r0[m + 1]
        x1 = t[m + 1] * inv[m + 1]
        t[m + 2] -= x0 * r0[m + 2] + x1 * r1[m + 2]
        x2 = t[m + 2] * inv[m + 2]
        t[m + 3] -= (x0 * r0[m + 3] + x1 * r1[m + 3]) + x2 * r2[m + 3]
        x3 = t[m + 3] * inv[m + 3]
        norm2 += (x0 * x0 + x1 * x1) + (x2 * x2 + x3 * x3)
        tt, t0, t1, t2, t3 = t[m + 4:], r0[m + 4:], r1[m + 4:], r2[m + 4:], r3[m + 4:]
        for i in range(k - m - 4):
            tt[i] -= (x0 * t0[i] + x1 * t1[i]) + (x2 * t2[i] + x3 * t3[i])
        m += 4
    while m < k:
        x = t[m] * inv[m]
        norm2 += x * x
        tt, rm = t[m + 1:], r[m, m + 1:]
        for i in range(k - m - 1):
            tt[i] -= x * rm[i]
        m += 1
    return norm2


@njit
def _checked_cholesky(r, gd, inv, t, lo, hi, limit, take_log):
    """(result, accepted) from the upper triangle of G in r (float64, overwritten by R).

    ``gd`` receives G_jj, ``inv`` 1/R_jj; ``t`` is k scratch. The result is the
    (log-)volume ``Σ log R_jj`` when accepted, else 0.
    """
    k = r.shape[0]
    for j in range(k):
        d = r[j, j]
        gd[j] = d
        if not lo < d < hi:  # a square under- or overflowed, or NaN/Inf in column j
            return 0.0, False
    if not _cholesky(r, inv, lo, hi):
        return 0.0, False
    low = 0.0  # (G⁻¹)_jj ≥ 1 / R_jj²: a lower bound of s, free
    for j in range(k):
        low += math.sqrt(gd[j]) * inv[j]
    if not low <= limit:
        return 0.0, False
    s = 0.0
    for j in range(k):
        s += math.sqrt(gd[j] * _inverse_row_norm2(r, inv, j, t))
        if not s <= limit:  # partial sums bound s from below
            return 0.0, False
    prod, in_range = 1.0, True
    for j in range(k):
        prod *= r[j, j]
        in_range = in_range and _PROD_LO < prod < _PROD_HI
    if in_range:
        return (math.log(prod) if take_log else prod), True
    total = 0.0
    for j in range(k):
        total += math.log(r[j, j])
    if take_log:
        return total, True
    return (math.exp(total) if total < _EXP_MAX else math.inf), True


@njit
def _one_from_data(a, take_log, limit):
    """Result for one C-contiguous (n, k) matrix, NaN if rejected (never an accepted value)."""
    k = a.shape[1]
    r = np.empty((k, k))
    _product(a, r)
    value, accepted = _checked_cholesky(r, np.empty(k), np.empty(k), np.empty(k), _LO64, _HI64,
                                        limit, take_log)
    return value if accepted else math.nan


@njit
def _one_from_gram(g, take_log, limit, lo, hi):
    """Result for one float64 Gram matrix g (k, k), factored in place; NaN if rejected."""
    k = g.shape[0]
    value, accepted = _checked_cholesky(g, np.empty(k), np.empty(k), np.empty(k), lo, hi,
                                        limit, take_log)
    return value if accepted else math.nan


def acceptance_limit(n, k):
    """Largest accepted s = Σ_j sqrt(G_jj (G⁻¹)_jj): ``2nk/(n+k+1)`` (module docstring)."""
    return 2.0 * n * k / (n + k + 1)


# Below this n·k² the kernel's own product beats a BLAS call plus NumPy's error-state
# switch for one matrix (measured: 64×8 and 512×8 are below, 128×16 at the crossover).
PRODUCT_MAX_NK2 = 40_000
# Compiled code never warns; as plain Python (NUMBA_DISABLE_JIT=1) the NumPy scalars warn
# on the over/underflow that the range tests catch, hence errstate only then (it costs
# a sixth of a whole 64×8 volume)
_PLAIN = bool(numba.config.DISABLE_JIT)


def gram_log_volume_one(a, take_log=True):
    """(Log) volume of one matrix a (n, k), n > k >= 1, by the guarded Gram route.

    Returns the result as a Python float, or NaN when the matrix is rejected (left to
    the caller's QR; an accepted result is never NaN). This kernel returns its result
    instead of writing an output array: for one small matrix the array handling would
    cost as much as the volume. No validation. Small matrices (n·k² <= PRODUCT_MAX_NK2)
    form their Gram matrix in float64 here, larger ones by BLAS in ``a``'s precision.
    """
    n, k = a.shape
    limit = 2.0 * n * k / (n + k + 1)  # acceptance_limit, inlined: this is per call
    if n * k * k <= PRODUCT_MAX_NK2:
        if not a.flags.c_contiguous:  # one compiled layout
            a = np.ascontiguousarray(a)
        if _PLAIN:
            with np.errstate(all="ignore"):
                return _one_from_data(a, bool(take_log), limit)
        return _one_from_data(a, bool(take_log), limit)
    token = ignore_fp_errors()  # over/underflow in aᵀa: caught by the range test
    try:
        g = np.dot(a.T, a)  # BLAS syrk; a temporary of ours, factored in place
        if _PLAIN:
            return _from_blas_gram(g, bool(take_log), limit)
    finally:
        restore_fp_errors(token)
    return _from_blas_gram(g, bool(take_log), limit)


def _from_blas_gram(g, take_log, limit):
    """gram_log_volume_one's result from a BLAS Gram matrix in the input's precision."""
    if g.dtype == np.float32:  # range of the float32 product, Cholesky in float64
        return _one_from_gram(g.astype(np.float64), take_log, limit, _LO32, _HI32)
    return _one_from_gram(g, take_log, limit, _LO64, _HI64)
