"""Exact partial SVD for NumPy: SciPy's PROPACK Lanczos, verified a posteriori.

PROPACK computes only the leading triplets and is far faster than a full ``gesdd`` when
the rank is small next to ``min(m, n)`` (17x measured on 4096², rank 64). It can
fail silently on inputs with repeated singular values (on the identity it returns
non-orthonormal vectors and wrong values), so every result is checked here and ``None``
is returned whenever it is not a genuine set of leading singular triplets; the caller
then falls back to the thin SVD.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["prefers_partial_solver", "propack_truncated_svd", "stable_rank_estimate", "suits_lanczos"]

# Crossover, measured on the 2-core CI machine (docs/theory/svd.md): with a 1/i
# spectrum PROPACK wins up to rank ~ min(m, n)/5 (square) and ~min(m, n)/8 (tall); flat
# spectra converge slowly, so we try it only at rank <= min(m, n)/16 and cap its Lanczos
# steps at min(m, n)/4, which keeps a failed attempt cheaper than the thin SVD itself.
_MIN_SIZE = 256
_MIN_RATIO = 16
_MAX_STEP_FRACTION = 4
# Deterministic starting vector: same input, same output.
_SEED = 0x5EED


def prefers_partial_solver(shape: tuple[int, ...], rank: int, dtype: Any) -> bool:
    """Whether PROPACK should beat the thin SVD here."""  # numpydoc ignore=PR01,RT01
    if len(shape) != 2 or dtype not in (np.float32, np.float64):
        return False
    small = min(shape)
    return rank >= 1 and small >= _MIN_SIZE and rank * _MIN_RATIO <= small


# PROPACK only where the top of the spectrum is steep enough for Lanczos: stable rank
# ‖a‖_F² / ‖a‖_2² at most _STABLE_RANK_RATIO · rank, or near-square a (m, n within 2x)
# at rank <= min(m, n) / 32. Measured (bench/truncated_svd_crossover.py, one thread):
# every PROPACK failure had stable rank >= 4.1 · rank (flat spectra, where a failed
# attempt costs 0.3-0.6 of the thin SVD and is then followed by it); every case at
# <= 3.2 · rank converged in 0.08-0.5 of the thin SVD's time, and flat near-square
# matrices at rank <= min(m, n) / 30 in 0.2-0.35 of it.
_STABLE_RANK_RATIO = 4.0
_SQUARE_ASPECT = 2
_SQUARE_RATIO = 32
_PROBES = 4
_POWER_STEPS = 8


def stable_rank_estimate(a: np.ndarray) -> float:
    """Estimate of ``‖a‖_F² / ‖a‖_2²`` from Gaussian probes (``2·_POWER_STEPS + 2`` products).

    ``‖a G‖_F² / p`` estimates ``‖a‖_F²`` without bias (tightly when many singular values
    are comparable, loosely when a few dominate) and power iteration on ``a G`` gives a
    lower bound of ``‖a‖_2²``, so on flat spectra, where the decision matters, the ratio
    errs towards large stable ranks (towards the thin SVD, which is always correct).
    Over/underflow gives inf (the thin SVD again).
    """  # numpydoc ignore=PR01,RT01
    rng = np.random.default_rng(_SEED)
    with np.errstate(all="ignore"):
        Y = a @ rng.standard_normal((a.shape[1], _PROBES)).astype(a.dtype)
        fro_sq = float(np.sum(np.square(Y, dtype=np.float64))) / _PROBES
        v = a.T @ Y[:, :1]  # the power iteration starts from the probes' image
        for _ in range(_POWER_STEPS):
            v = v / np.linalg.norm(v)
            v = a.T @ (a @ v)
        top_sq = float(np.linalg.norm(v))  # ‖aᵀa v‖ <= σ_1² for unit v
        ratio = fro_sq / top_sq if top_sq > 0 else math.inf
    return ratio if math.isfinite(ratio) else math.inf


def suits_lanczos(a: np.ndarray, rank: int) -> bool:
    """Whether PROPACK is expected to beat the thin SVD on this ``a`` (see the measured rule)."""  # numpydoc ignore=PR01,RT01
    m, n = a.shape
    if max(m, n) <= _SQUARE_ASPECT * min(m, n) and rank * _SQUARE_RATIO <= min(m, n):
        return True
    return stable_rank_estimate(a) <= _STABLE_RANK_RATIO * rank


def propack_truncated_svd(a: np.ndarray, rank: int) -> tuple[Any, Any, Any] | None:
    """Leading triplets, descending, or None if unverified."""  # numpydoc ignore=PR01,RT01
    from scipy.sparse.linalg import svds

    try:
        with warnings.catch_warnings(), quiet_stdout():
            warnings.simplefilter("ignore")
            U, S, Vh = svds(
                a,
                k=rank,
                solver="propack",
                maxiter=_lanczos_steps(a.shape, rank),
                rng=np.random.default_rng(_SEED),
            )
    except (np.linalg.LinAlgError, ArithmeticError, RuntimeError, ValueError):
        return None
    if not np.all(np.isfinite(Vh)):
        return None
    U, S, Vh = _rayleigh_ritz(a, Vh)
    # After Rayleigh-Ritz aᵀU = V S holds to rounding by construction: skip that pass.
    if not _is_leading_triplets(a, U, S, Vh, left=False):
        return None
    return U, S, Vh


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send the process's C-level stdout (fd 1) to the null device meanwhile.

    PROPACK's LAPACK calls print messages such as ``DLASCL`` parameter errors on flat
    spectra straight to fd 1, bypassing ``sys.stdout``; the result is verified anyway.
    """  # numpydoc ignore=RT01,YD01
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 (some embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _rayleigh_ritz(a: Any, Vh: Any) -> tuple[Any, Any, Any]:
    """Best triplets within span(a Vᴴ) (orthonormal to rounding)."""  # numpydoc ignore=PR01,RT01
    # PROPACK's Lanczos vectors drift from orthonormality (~1e-11 in float64); one
    # Rayleigh-Ritz step on the right subspace restores it and makes aᵀU = V S exact.
    Q, _ = np.linalg.qr(a @ Vh.T)
    Ub, S, Vh = np.linalg.svd(Q.T @ a, full_matrices=False)
    return Q @ Ub, S, Vh


def _lanczos_steps(shape: tuple[int, ...], rank: int) -> int:
    """Cap on PROPACK's Lanczos steps (``kmax``)."""  # numpydoc ignore=PR01,RT01
    return min(max(40 * rank, 60), min(shape) // _MAX_STEP_FRACTION)


def _is_leading_triplets(a: Any, U: Any, S: Any, Vh: Any, *, left: bool = True) -> bool:
    """Orthonormal, both residuals small, nothing missed."""  # numpydoc ignore=PR01,RT01
    # Correct PROPACK results have relative residuals up to ~1e-9 (float64) and ~2e-5
    # (float32), which cost only O(residual²) in the approximation error; its silent
    # failures have O(1) residuals. sqrt(eps) separates the two with a wide margin.
    tol = math.sqrt(float(np.finfo(a.dtype).eps))
    if not (np.all(np.isfinite(S)) and np.all(S >= 0) and np.all(np.diff(S) <= 0)):
        return False
    sigma1 = float(S[0])
    if sigma1 == 0.0:
        return False  # a zero leading value means PROPACK saw no spectrum: use the SVD
    eye = np.eye(S.shape[0], dtype=a.dtype)
    if max(np.abs(U.T @ U - eye).max(), np.abs(Vh @ Vh.T - eye).max()) > tol:
        return False
    # Genuine triplets: a v = σ u and aᵀ u = σ v, column by column.
    res_right = np.linalg.norm(a @ Vh.T - U * S, axis=0).max()
    res_left = np.linalg.norm(a.T @ U - Vh.T * S, axis=0).max() if left else 0.0
    if max(res_right, res_left) > tol * sigma1:
        return False
    return _deflated_norm(a, U, S, Vh) <= float(S[-1]) + tol * sigma1


def _deflated_norm(a: Any, U: Any, S: Any, Vh: Any, block: int = 4, iters: int = 4) -> float:
    """Lower estimate of ‖a − U diag(S) Vh‖_2 (subspace iteration)."""  # numpydoc ignore=PR01,RT01
    rng = np.random.default_rng(_SEED)
    Q = rng.standard_normal((a.shape[1], block)).astype(a.dtype)

    def apply(X: Any) -> Any:
        return a @ X - U @ (S[:, None] * (Vh @ X))

    def apply_t(Y: Any) -> Any:
        return a.T @ Y - Vh.T @ (S[:, None] * (U.T @ Y))

    for _ in range(iters):
        Q, _ = np.linalg.qr(apply_t(apply(Q)))
    return float(np.linalg.norm(apply(Q), 2))
