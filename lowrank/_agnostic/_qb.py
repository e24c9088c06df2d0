"""Fixed-accuracy blocked randQB and error estimates for ``svd_approx`` (pure array API).

Yu, Gu & Li (2018), "Efficient randomized algorithms for the fixed-precision low-rank
matrix approximation", Alg. randQB_EI, without downdating (or copying) ``a``: the residual
``a − Q B`` is only ever applied as ``a X − Q (B X)``.
"""

from __future__ import annotations

import math
from typing import Any

from ._linalg import conj_transpose, svd_flip
from ._randomized import empty, orthonormalize, project_out, randomized_svd, svd_from_basis

__all__ = ["GUARD", "frobenius_sq", "probe_error_sq", "randqb", "sq_norm", "svd_approx"]

# Below GUARD·sqrt(eps)·‖a‖_F the cheap update ‖a‖² − ‖B‖² is dominated by rounding
# (HMT 2011 §4.3): the error is then measured with Gaussian probes instead.
GUARD = 10.0


def frobenius_sq(op: Any, xp: Any) -> float:
    """``‖a‖_F²`` in float64 (one pass for dense input)."""  # numpydoc ignore=PR01,RT01
    if not op.dense:  # SciPy sparse (LinearOperators are refused by the public layer)
        data = op.a._a.data
        return float((abs(data) ** 2).sum())
    op.count_pass()
    return float(xp.linalg.vector_norm(op.a)) ** 2


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
           rand: Any, xp: Any) -> tuple[Any, Any, float]:
    """Grow ``Q``, ``B`` block by block until ``‖a − QB‖_F² <= tol_sq`` (estimated).

    Returns ``(Q, B, err_sq)``. ``err_sq`` is the cheap update ``‖a‖² − ‖B‖²`` while that
    is above the rounding guard; below it, ``‖(a − QB)Ω‖²/b`` from the next block's own
    sketch (an unbiased probe estimate that costs no extra pass).
    """  # numpydoc ignore=PR01,RT01
    limit = min(op.m, op.n)
    guard_sq = _guard_sq(op, norm_sq, xp)
    Q = B = None
    err_sq, width = norm_sq, block or 32
    while Q is None or Q.shape[-1] < limit:
        if guard_sq < err_sq <= tol_sq:  # met, and the cheap estimate is trustworthy
            break
        b = min(width, limit - (0 if Q is None else Q.shape[-1]))
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
    """See docstring in `lowrank._randomized`."""  # numpydoc ignore=PR01,RT01
    norm_sq = frobenius_sq(op, xp)
    op.check_norm(norm_sq)
    if norm_sq == 0.0 or min(op.m, op.n) == 0:
        U, S, Vh = empty(op, rank or 0, xp)
        return U, S, Vh, 0.0, op.passes
    if rank is not None:
        U, S, Vh, err_sq = _fixed_rank(op, rank, norm_sq, rand, xp, n_oversamples=n_oversamples,
                                       n_power_iter=n_power_iter, method="auto")
        return U, S, Vh, math.sqrt(err_sq / norm_sq), op.passes
    tol_sq = rtol**2 * norm_sq
    Q, B, err_sq = randqb(op, tol_sq, norm_sq, block=block_size,
                          n_power_iter=1 if n_power_iter is None else n_power_iter,
                          rand=rand, xp=xp)
    U, S, Vh = svd_from_basis(Q, conj_transpose(B, xp), B.shape[-2], xp)
    k, err_sq = _truncation_rank(S, err_sq, tol_sq)
    U, S, Vh = U[..., :k], S[..., :k], Vh[..., :k, :]
    if op.transposed:
        U, Vh = conj_transpose(Vh, xp), conj_transpose(U, xp)
    U, Vh = svd_flip(U, Vh, xp)
    return U, S, Vh, math.sqrt(err_sq / norm_sq), op.passes
