"""Fixed-accuracy blocked randQB and error estimates for ``svd_approx`` (pure array API).

Yu, Gu & Li (2018), "Efficient randomized algorithms for the fixed-precision low-rank
matrix approximation", Alg. randQB_EI, without downdating (or copying) ``a``: the residual
``a − Q B`` is only ever applied as ``a X − Q (B X)``.
"""

from __future__ import annotations

import math
from typing import Any

from ._linalg import conj_transpose, svd_flip
from ._orthogonal import next_block
from ._gram_krylov import gram_fixed_accuracy
from ._randomized import empty, orthonormalize, project_out, randomized_svd, svd_from_basis

__all__ = ["GUARD", "frobenius_norm", "probe_error_sq", "randqb", "sq_norm", "svd_approx"]

# Below GUARD·sqrt(eps)·‖a‖_F the cheap update ‖a‖² − ‖B‖² is dominated by rounding
# (HMT 2011 §4.3): the error is then measured with Gaussian probes instead.
GUARD = 10.0
# Dense inputs: one exact SVD instead of randQB when min(m, n) <= EXACT_BELOW, or as soon
# as the basis needs more than min(m, n) / EXACT_FRACTION columns (bench/, measured).
EXACT_BELOW = 64
EXACT_FRACTION = 4


# Rows of ``a`` whose norm is taken at once: bounds the temporaries to a few MB.
_NORM_CHUNK = 1 << 20


def frobenius_norm(op: Any, xp: Any) -> float:
    """``‖a‖_F`` as a float, without overflow or underflow (one pass).

    NaN/Inf in ``a`` give a non-finite value. Dense ``a`` is read in row blocks, so no
    temporary of its size is made.
    """  # numpydoc ignore=PR01,RT01
    import numpy as np

    if not op.dense:  # SciPy sparse (LinearOperators are refused by the public layer)
        return _safe_norm(xp.asarray(op.a.data), xp)
    op.count_pass()
    a = op.a
    if a.shape[0] == 0 or a.shape[-1] == 0:
        return 0.0
    rows = max(1, _NORM_CHUNK // max(1, a.shape[-1]))
    m = a.shape[0]
    chunks = [a[i:min(i + rows, m), ...] for i in range(0, m, rows)]
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        fast = [float(v) for v in xp.stack([xp.linalg.vector_norm(c) for c in chunks])]
    low, high = _safe_window(xp.finfo(op.dtype))
    norms = [v if low <= v <= high else _safe_norm(c, xp) for v, c in zip(fast, chunks)]
    return _hypot(norms)


def _safe_window(finfo: Any) -> tuple[float, float]:
    """Norms in this range were computed without over/underflow of their squares."""  # numpydoc ignore=PR01,RT01
    top = 2.0 ** (math.log2(float(finfo.max)) / 4)
    return 1.0 / top, top


def _safe_norm(x: Any, xp: Any) -> float:
    """``‖x‖_F`` with ``x`` first scaled by a power of two (exact) near ``1 / max|x|``."""  # numpydoc ignore=PR01,RT01
    if x.shape[0] == 0:
        return 0.0
    big = float(xp.max(xp.abs(x)))
    if big == 0.0 or not math.isfinite(big):
        return big
    c = 2.0 ** -round(math.log2(big))
    return float(xp.linalg.vector_norm(x * c)) / c


def _hypot(norms: list[float]) -> float:
    """``sqrt(Σ norms²)`` in Python floats, scaled by the largest term."""  # numpydoc ignore=PR01,RT01
    if any(not math.isfinite(v) for v in norms):
        return math.nan
    top = max(norms, default=0.0)
    if top == 0.0:
        return 0.0
    return top * math.sqrt(sum((v / top) ** 2 for v in norms))


def sq_norm(X: Any, xp: Any) -> float:
    """``‖X‖_F²`` accumulated in float64."""  # numpydoc ignore=PR01,RT01
    return float(xp.sum(xp.astype(xp.abs(X), xp.float64) ** 2))


def probe_error_sq(op: Any, U: Any, SVh: Any, n_probes: int, rand: Any, xp: Any) -> float:
    """Unbiased estimate of ``‖a − U SVh‖_F²`` from ``n_probes`` Gaussian products (one pass)."""  # numpydoc ignore=PR01,RT01
    omega = rand.standard_normal((op.n, n_probes), op.dtype)
    R = op.matmat(omega) - U @ (SVh @ omega)
    return sq_norm(R, xp) / n_probes


def _residual_sketch(op: Any, Q: Any, B: Any, X: Any) -> Any:
    """``(a − Q B) X`` (one pass)."""  # numpydoc ignore=PR01,RT01
    Y = op.matmat(X)
    return Y if Q is None else Y - Q @ (B @ X)


def _power_step(op: Any, Q: Any, B: Any, Qi: Any, xp: Any) -> Any:
    """One power iteration on the residual ``a − Q B`` (two passes)."""  # numpydoc ignore=PR01,RT01
    Z = op.rmatmat(Qi)
    if Q is not None:
        Z = Z - conj_transpose(B, xp) @ (conj_transpose(Q, xp) @ Qi)
    return orthonormalize(_residual_sketch(op, Q, B, orthonormalize(Z, xp)), xp)


def randqb(op: Any, tol_sq: float, norm_sq: float, *, block: int | None, n_power_iter: int,
           rand: Any, xp: Any, max_width: int | None = None) -> tuple[Any, Any, float] | None:
    """Grow ``Q``, ``B`` block by block until ``‖a − QB‖_F² <= tol_sq`` (estimated).

    Returns ``(Q, B, err_sq)``, or None as soon as ``Q`` would need more than
    ``max_width`` columns. ``err_sq`` is the cheap update ``‖a‖² − ‖B‖²`` while that
    is above the rounding guard; below it, ``‖(a − QB)Ω‖²/b`` from the next block's own
    sketch (an unbiased probe estimate that costs no extra pass).
    """  # numpydoc ignore=PR01,RT01
    limit = min(op.m, op.n)
    max_width = limit if max_width is None else max_width
    guard_sq = _guard_sq(op, norm_sq, xp)
    Q = B = None
    err_sq, width = norm_sq, block or 32
    while Q is None or Q.shape[-1] < limit:
        if guard_sq < err_sq <= tol_sq:  # met, and the cheap estimate is trustworthy
            break
        b = min(width, limit - (0 if Q is None else Q.shape[-1]))
        if (0 if Q is None else Q.shape[-1]) + b > max_width:
            return None
        Y = _residual_sketch(op, Q, B, rand.standard_normal((op.n, b), op.dtype))
        if err_sq <= guard_sq:  # cheap update unreliable: Y doubles as a probe
            err_sq = sq_norm(Y, xp) / b
            if err_sq <= tol_sq:
                break
        Qi = orthonormalize(Y, xp)
        for _ in range(n_power_iter):
            Qi = _power_step(op, Q, B, Qi, xp)
        Qi = orthonormalize(project_out(Qi, Q, xp), xp)  # re-orthogonalise (BCGS2)
        Bi = conj_transpose(op.rmatmat(Qi), xp)
        Q = Qi if Q is None else xp.concat([Q, Qi], axis=-1)
        B = Bi if B is None else xp.concat([B, Bi], axis=-2)
        err_sq = max(norm_sq - sq_norm(B, xp), 0.0)
        width = width if block else 2 * width  # doubling: passes grow like log(rank)
    else:  # Q spans all of range(a): only rounding is left, measure it if it matters
        if err_sq <= guard_sq:
            probes = rand.standard_normal((op.n, 16), op.dtype)
            err_sq = sq_norm(_residual_sketch(op, Q, B, probes), xp) / 16
    return Q, B, err_sq


def _krylov_extension(op: Any, Q: Any, B: Any, err_sq: float, norm_sq: float,
                      tol_sq: float, rand: Any, xp: Any) -> tuple[Any, Any, Any, float]:
    """Rank-truncatable SVD ``(U, S, Vh, err_sq)`` of ``a`` on ``[Q, orth(A Aᴴ Q Z_t)]``.

    randQB stops as soon as ``‖a − QB‖`` meets the tolerance, but on flat spectra the
    best rank-k approximation inside ``span(Q)`` is then still far from the optimal one:
    the truncation needed 13-33 % more rank than the Eckart–Young optimum on Gaussian
    matrices. One Krylov step on the leading ``t`` Ritz vectors ``Q Z_t`` (``t``: the
    rank the first basis needs, plus a quarter and at least 10; ``A Aᴴ Q Z_t = A Bᴴ Z_t``
    is one product) brings that to 2-12 % for two more passes. The two parts of the
    basis are kept apart (no m-row concatenation) to hold the peak memory near
    randQB's own.
    """  # numpydoc ignore=PR01,RT01
    P, S, Zh = xp.linalg.svd(conj_transpose(B, xp), full_matrices=False)  # Bᴴ = P S Zᴴ
    k0, _ = _truncation_rank(S, err_sq, tol_sq)
    room = min(op.m, op.n) - Q.shape[-1]
    t = min(Q.shape[-1], room, k0 + max(10, k0 // 4))
    if t <= 0:
        k, err_sq = _truncation_rank(S, err_sq, tol_sq)
        return Q @ conj_transpose(Zh[..., :k, :], xp), S[..., :k], conj_transpose(
            P[..., :k], xp), err_sq
    Y = op.matmat(P[..., :t] * xp.astype(S[..., None, :t], P.dtype))  # A Bᴴ Z_t
    Qn = next_block(Y, Q, rand, xp, overwrite=True)
    del Y
    Bn = conj_transpose(op.rmatmat(Qn), xp)
    Wfull = xp.concat([conj_transpose(B, xp), conj_transpose(Bn, xp)], axis=-1)
    P, S, Zh = xp.linalg.svd(Wfull, full_matrices=False)
    new = max(norm_sq - sq_norm(S, xp), 0.0)
    # below the rounding guard keep the earlier (probe) estimate: the space only grew
    k, err_sq = _truncation_rank(S, new if new > _guard_sq(op, norm_sq, xp) else err_sq,
                                 tol_sq)
    Z = conj_transpose(Zh[..., :k, :], xp)
    w = Q.shape[-1]
    U = Q @ Z[..., :w, :]
    U += Qn @ Z[..., w:, :]
    return U, S[..., :k], conj_transpose(P[..., :k], xp), err_sq


def _max_basis(op: Any) -> int | None:
    """Widest randQB basis worth building before one exact SVD of dense ``a`` is cheaper."""  # numpydoc ignore=PR01,RT01
    if not op.dense:
        return None  # sparse: the dense SVD would also densify
    small = min(op.m, op.n)
    return 0 if small <= EXACT_BELOW else small // EXACT_FRACTION


def _exact_truncation(op: Any, norm_sq: float, tol_sq: float,
                      xp: Any) -> tuple[Any, Any, Any, float]:
    """Optimal (Eckart–Young) truncation of the thin SVD of dense ``a``: one read."""  # numpydoc ignore=PR01,RT01
    op.count_pass()
    U, S, Vh = xp.linalg.svd(op.a, full_matrices=False)  # LAPACK scales internally
    S = S * op.scale_factor  # singular values of the (scaled) operator, safe to square
    k, err_sq = _truncation_rank(S, 0.0, tol_sq)
    U, Vh = svd_flip(U[..., :k], Vh[..., :k, :], xp)
    return U, S[..., :k], Vh, math.sqrt(err_sq / norm_sq)


def _guard_sq(op: Any, norm_sq: float, xp: Any) -> float:
    """Squared error level below which ``‖a‖² − ‖B‖²`` is rounding noise."""  # numpydoc ignore=PR01,RT01
    return (GUARD * math.sqrt(float(xp.finfo(op.dtype).eps))) ** 2 * norm_sq


def _truncation_rank(S: Any, err_sq: float, tol_sq: float) -> tuple[int, float]:
    """Smallest k with ``err_sq + Σ_{j>k} s_j² <= tol_sq`` (all of S if none), and that error."""  # numpydoc ignore=PR01,RT01
    s2 = [float(S[i]) ** 2 for i in range(S.shape[-1])]
    tails = [0.0] * (len(s2) + 1)  # suffix sums, added from the small end: no cancellation
    for k in range(len(s2) - 1, -1, -1):
        tails[k] = tails[k + 1] + s2[k]
    k = next((k for k, t in enumerate(tails) if err_sq + t <= tol_sq), len(s2))
    return k, err_sq + tails[k]


def _fixed_rank(op: Any, rank: int, norm_sq: float, rand: Any, xp: Any,
                **options: Any) -> tuple[Any, Any, Any, float]:
    """Block-Krylov SVD of fixed rank; error from ``‖a‖² − ΣS²`` or 16 probes below the guard."""  # numpydoc ignore=PR01,RT01
    U, S, Vh = randomized_svd(op, rank, rand=rand, xp=xp, **options)
    err_sq = max(norm_sq - sq_norm(S, xp), 0.0)
    if err_sq <= _guard_sq(op, norm_sq, xp):
        fwd = op.T if op.transposed else op
        err_sq = probe_error_sq(fwd, U, S[..., :, None] * Vh, 16, rand, xp)
    return U, S, Vh, err_sq


def svd_approx(op: Any, rank: int | None, rtol: float | None, *, n_oversamples: int,
               n_power_iter: int | None, block_size: int | None, rand: Any,
               xp: Any) -> tuple[Any, Any, Any, float, int]:
    """See docstring in `lowrank._svd_approx`."""  # numpydoc ignore=PR01,RT01
    norm = frobenius_norm(op, xp)
    op.check_norm(norm)
    if norm == 0.0 or min(op.m, op.n) == 0:
        U, S, Vh = empty(op, rank or 0, xp)
        return U, S, Vh, 0.0, op.passes
    # Work on 2^e·a with ‖2^e·a‖_F near 1 (exact): ‖a‖² and the Gram matrices of the blocks
    # would over/underflow long before a itself does. Singular values are unscaled at the end.
    exponent = _unit_exponent(norm, xp.finfo(op.dtype))
    if exponent:
        op, norm = op.scaled(exponent), math.ldexp(norm, exponent)
    U, S, Vh, rel = _svd_approx_unit(op, norm**2, rank, rtol, n_oversamples=n_oversamples,
                                     n_power_iter=n_power_iter, block_size=block_size,
                                     rand=rand, xp=xp)
    return U, (S * 2.0**-exponent if exponent else S), Vh, rel, op.passes


def _unit_exponent(norm: float, finfo: Any) -> int:
    """``e`` with ``2^e · norm`` near 1, or 0 if ``norm`` is safe to square as it is."""  # numpydoc ignore=PR01,RT01
    low, high = _safe_window(finfo)
    return 0 if low**0.5 <= norm <= high**0.5 else -round(math.log2(norm))


def _svd_approx_unit(op: Any, norm_sq: float, rank: int | None, rtol: float | None, *,
                     n_oversamples: int, n_power_iter: int | None, block_size: int | None,
                     rand: Any, xp: Any) -> tuple[Any, Any, Any, float]:
    """``svd_approx`` of an operator whose norm is safe to square."""  # numpydoc ignore=PR01,RT01
    if rank is not None:
        U, S, Vh, err_sq = _fixed_rank(op, rank, norm_sq, rand, xp, n_oversamples=n_oversamples,
                                       n_power_iter=n_power_iter, method="auto")
        return U, S, Vh, math.sqrt(err_sq / norm_sq)
    tol_sq = rtol**2 * norm_sq
    if op.dense and n_power_iter is None:  # short-side basis: no m-row basis, fewer reads
        short = gram_fixed_accuracy(op, norm_sq, tol_sq, _guard_sq(op, norm_sq, xp),
                                    block=block_size, max_width=_max_basis(op), rand=rand,
                                    xp=xp)
        if short is None:
            return _exact_truncation(op, norm_sq, tol_sq, xp)
        U, S, Vh, err_sq = short
        return _oriented(op, U, S, Vh, err_sq, norm_sq, xp)
    found = randqb(op, tol_sq, norm_sq, block=block_size,
                   n_power_iter=1 if n_power_iter is None else n_power_iter,
                   rand=rand, xp=xp, max_width=_max_basis(op))
    if found is None:
        return _exact_truncation(op, norm_sq, tol_sq, xp)
    Q, B, err_sq = found
    del found
    U, S, Vh, err_sq = _krylov_extension(op, Q, B, err_sq, norm_sq, tol_sq, rand, xp)
    del Q, B
    return _oriented(op, U, S, Vh, err_sq, norm_sq, xp)


def _oriented(op: Any, U: Any, S: Any, Vh: Any, err_sq: float, norm_sq: float,
              xp: Any) -> tuple[Any, Any, Any, float]:
    """Factors of the caller's ``a`` (not of its transpose), sklearn's signs, relative error."""  # numpydoc ignore=PR01,RT01
    if op.transposed:
        U, Vh = conj_transpose(Vh, xp), conj_transpose(U, xp)
    U, Vh = svd_flip(U, Vh, xp)
    return U, S, Vh, math.sqrt(err_sq / norm_sq)
