"""Volume-based column selection: greedy (pivoted QR), maxvol swaps, volume sampling.

No validation; ``a`` is a 2-D floating array with ``1 <= k <= min(n, m)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._lib import _compat
from .._lib._random import Random
from ._linalg import conj_transpose

__all__ = ["maxvol_columns", "pivoted_qr_columns", "volume_sampling_columns"]


def _sq_abs(x: Any, xp: Any) -> Any:
    """|x|² elementwise, real."""  # numpydoc ignore=PR01,RT01
    return xp.real(x * xp.conj(x)) if xp.isdtype(x.dtype, "complex floating") else x * x


def _project_out(res: Any, q: Any, xp: Any) -> Any:
    """Remove the component along the unit vector ``q`` from every column of ``res``."""  # numpydoc ignore=PR01,RT01
    qh = xp.conj(q) if xp.isdtype(q.dtype, "complex floating") else q
    for _ in range(2):  # twice ("twice is enough"): the residual stays orthogonal to q
        res = res - q[:, None] * xp.sum(qh[:, None] * res, axis=0)[None, :]
    return res


def pivoted_qr_columns(a: Any, k: int, xp: Any) -> list[int]:
    """Greedy max-volume: column-pivoted Gram–Schmidt, pivot order."""  # numpydoc ignore=PR01,RT01
    m = a.shape[1]
    res, chosen = a, []
    index = xp.arange(m, device=_compat.device(a))
    taken = xp.zeros(m, dtype=xp.bool, device=_compat.device(a))
    for _ in range(k):
        norms = xp.sum(_sq_abs(res, xp), axis=0)  # recomputed, not downdated: no drift
        j = int(xp.argmax(xp.where(taken, -xp.ones_like(norms), norms)))
        chosen.append(j)
        taken = taken | (index == j)
        norm = math.sqrt(float(norms[j]))
        if norm > 0:  # a zero residual has nothing left to remove
            res = _project_out(res, res[:, j] / norm, xp)
    return chosen


def _swap_gains(a: Any, cols: list[int], xp: Any) -> tuple[float, Any]:
    """log vol(a[:, cols]) and the squared-volume ratio of every single swap.

    Replacing chosen column i by column j multiplies vol² by
    ``|B_ij|² + ‖r_j‖² (G⁻¹)_ii`` with ``B = C⁺ a``, ``r_j = (I − C C⁺) a_j`` and
    ``G = Cᴴ C`` (the rectangular maxvol criterion; exact, from the matrix
    determinant lemma).
    """  # numpydoc ignore=PR01,RT01
    idx = xp.asarray(cols, dtype=xp.int64, device=_compat.device(a))
    Q, R = xp.linalg.qr(xp.take(a, idx, axis=1))
    diag = xp.abs(xp.linalg.diagonal(R))
    with np.errstate(divide="ignore"):  # log(0) = -inf: a rank-deficient selection
        logvol = float(xp.sum(xp.log(diag)))
    if not math.isfinite(logvol):
        return logvol, None
    coef = conj_transpose(Q, xp) @ a  # k × m
    resid = xp.sum(_sq_abs(a - Q @ coef, xp), axis=0)
    Rinv = xp.linalg.inv(R)
    B = Rinv @ coef
    ginv = xp.sum(_sq_abs(Rinv, xp), axis=1)
    return logvol, _sq_abs(B, xp) + ginv[:, None] * resid[None, :]


def maxvol_columns(a: Any, k: int, xp: Any, max_iter: int = 1000) -> list[int]:
    """Pivoted-QR start, then best single swaps while the volume grows (maxvol)."""  # numpydoc ignore=PR01,RT01
    cols = pivoted_qr_columns(a, k, xp)
    tol = math.sqrt(xp.finfo(a.dtype).eps)  # gains below rounding level are not taken
    best, gains = _swap_gains(a, cols, xp)
    for _ in range(max_iter):
        if gains is None:  # rank(a) < k: every selection has volume 0
            break
        flat = int(xp.argmax(xp.reshape(gains, (-1,))))
        i, j = divmod(flat, a.shape[1])
        if float(gains[i, j]) <= 1 + tol:
            break
        trial = [*cols[:i], j, *cols[i + 1 :]]
        logvol, trial_gains = _swap_gains(a, trial, xp)
        if not logvol > best:  # guard against rounding: never accept a smaller volume
            break
        cols, best, gains = trial, logvol, trial_gains
    return cols


def _log_elementary_symmetric(lam: list[float], k: int) -> np.ndarray:
    """L[j, l] = log e_l(lam[:j]) for l <= k (-inf where e_l = 0).

    In log space because e_k of a decaying spectrum underflows float64 long before the
    ratios the sampler needs do (k = 80 values from 1 down to 1e-24 already give
    e_k < 1e-308). The recurrence is e_l(lam[:j]) = e_l(lam[:j-1]) + lam_j e_{l-1}(lam[:j-1]).
    """  # numpydoc ignore=PR01,RT01
    table = np.full((len(lam) + 1, k + 1), -np.inf)
    table[0, 0] = 0.0
    with np.errstate(divide="ignore"):  # log(0) = -inf: a zero eigenvalue adds nothing
        log_lam = np.log(np.asarray(lam, dtype=np.float64))
    for j, log_x in enumerate(log_lam, start=1):
        prev = table[j - 1]
        table[j, 0] = 0.0
        table[j, 1:] = np.logaddexp(prev[1:], log_x + prev[:-1])
    return table


def _choose_spectrum(lam: list[float], k: int, draws: list[float]) -> list[int]:
    """Kulesza–Taskar Alg. 8, phase 1: eigen-indices J with P(J) ∝ prod lam[J]."""  # numpydoc ignore=PR01,RT01
    table, chosen, left = _log_elementary_symmetric(lam, k), [], k
    for j in range(len(lam), 0, -1):
        if left == 0:
            break
        if lam[j - 1] <= 0:  # never chosen; the count check guarantees enough positives
            continue
        # p = lam_j e_{left-1}(lam[:j-1]) / e_left(lam[:j]), as a difference of logs
        log_p = math.log(lam[j - 1]) + table[j - 1, left - 1] - table[j, left]
        if draws[j - 1] < math.exp(min(log_p, 0.0)):
            chosen.append(j - 1)
            left -= 1
    return chosen


def volume_sampling_columns(a: Any, k: int, rng: Any, xp: Any) -> list[int] | None:
    """k columns with P(S) ∝ det(a_Sᴴ a_S) (exact k-DPP sampler); None if rank(a) < k."""  # numpydoc ignore=PR01,RT01
    _, s, Vh = xp.linalg.svd(a, full_matrices=False)
    s_host = [float(x) for x in s]  # min(n, m) scalars steer the sampler
    tol = max(a.shape) * float(xp.finfo(a.dtype).eps) * (s_host[0] if s_host else 0.0)
    top = s_host[0] if s_host and s_host[0] > 0 else 1.0
    # Normalised eigenvalues of aᴴa: the scale cancels in P(S) (all |S| = k).
    lam = [(x / top) ** 2 if x > tol else 0.0 for x in s_host]
    if sum(x > 0 for x in lam) < k:
        return None
    draws = Random(rng, xp, _compat.device(a)).uniform((len(lam) + k,), xp.float64)
    draws = [float(x) for x in draws]
    J = _choose_spectrum(lam, k, draws[: len(lam)])
    idx = xp.asarray(J, dtype=xp.int64, device=_compat.device(a))
    V = conj_transpose(xp.take(Vh, idx, axis=0), xp)  # m × k, orthonormal columns
    return _projection_dpp(V, draws[len(lam) :], xp)


def _projection_dpp(V: Any, draws: list[float], xp: Any) -> list[int]:
    """Sample from the projection DPP with kernel V Vᴴ: rows by residual norm² (chain rule)."""  # numpydoc ignore=PR01,RT01
    chosen = []
    Y = V
    for u in draws:
        weights = xp.sum(_sq_abs(Y, xp), axis=1)
        cum = xp.cumulative_sum(weights)
        # first i with cum[i] > u·total (inverse-CDF draw); clamped against rounding
        below = xp.astype(cum <= u * float(cum[-1]), xp.int64)
        i = min(int(xp.sum(below)), Y.shape[0] - 1)
        while float(weights[i]) <= 0 and i > 0:
            i -= 1
        chosen.append(i)
        unit = Y[i, :] / math.sqrt(float(weights[i]))
        unit_h = xp.conj(unit) if xp.isdtype(Y.dtype, "complex floating") else unit
        for _ in range(2):  # project every row off the chosen row's direction, twice
            Y = Y - (Y @ unit_h)[:, None] * unit[None, :]
    return sorted(chosen)
