"""Gram volumes through the R factor of a QR factorisation (docs/theory/volume.md). No validation.

The volume ``sqrt(det(aᴴa))`` equals ``prod |diag(R)|`` for ``a = QR``; Householder QR is
backward stable, so the relative error is ~ eps·κ(a), where ``det(aᴴa)`` gives ~ eps·κ².
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._lib import _compat
from ._linalg import conj_transpose

__all__ = ["gram_volume", "log_gram_volume", "nonsquare_det", "real_dtype"]


def real_dtype(dtype: Any, xp: Any) -> Any:
    """Real dtype of the results: float32 for float32/complex64, else float64."""  # numpydoc ignore=PR01,RT01
    return xp.float32 if dtype in (xp.float32, xp.complex64) else xp.float64


def _r_diagonal(a: Any, xp: Any) -> Any:
    """|diag(R)| of a reduced QR factorisation of ``a`` (n >= k >= 1), real."""  # numpydoc ignore=PR01,RT01
    if _compat.is_numpy_namespace(xp):
        # native fast path: R only, no Q is formed
        r = xp.asarray(np.linalg.qr(a, mode="r"))
    else:  # the standard has no R-only mode; autograd flows through this on torch
        r = xp.linalg.qr(a).R
    return xp.abs(xp.linalg.diagonal(r))


def _structural(a: Any, xp: Any, log: bool) -> Any | None:
    """Results fixed by the shape alone: k = 0 -> 1, n < k -> 0; else None."""  # numpydoc ignore=PR01,RT01
    n, k = a.shape[-2], a.shape[-1]
    if k != 0 and n >= k:
        return None
    value = (0.0 if log else 1.0) if k == 0 else (-float("inf") if log else 0.0)
    dtype = real_dtype(a.dtype, xp)
    return xp.full(a.shape[:-2], value, dtype=dtype, device=_compat.device(a))


def log_gram_volume(a: Any, xp: Any) -> Any:
    """See docstring in `lowrank._volume`."""  # numpydoc ignore=PR01,RT01
    fixed = _structural(a, xp, log=True)
    if fixed is not None:
        return fixed
    # log of each |R_ii| separately: finite where the product under- or overflows.
    # log(0) = -inf is the intended answer for a rank-deficient a (NumPy would warn).
    with np.errstate(divide="ignore"):
        return xp.sum(xp.log(_r_diagonal(a, xp)), axis=-1)


def gram_volume(a: Any, xp: Any) -> Any:
    """See docstring in `lowrank._volume`."""  # numpydoc ignore=PR01,RT01
    fixed = _structural(a, xp, log=False)
    if fixed is not None:
        return fixed
    d = _r_diagonal(a, xp)
    # A partial product can overflow or underflow although the volume does not;
    # exp(sum log) then gives the right value (or the correctly saturated 0 / inf).
    with np.errstate(divide="ignore", over="ignore", under="ignore"):
        direct = xp.prod(d, axis=-1)
        via_log = xp.exp(xp.sum(xp.log(d), axis=-1))
    tiny = xp.finfo(direct.dtype).smallest_normal  # subnormal: digits were lost
    inexact = (direct < tiny) | xp.isinf(direct)
    return xp.where(inexact, via_log, direct)


def nonsquare_det(a: Any, xp: Any, log: bool = False) -> Any:
    """See docstring in `lowrank._volume`."""  # numpydoc ignore=PR01,RT01
    if a.shape[-2] < a.shape[-1]:
        a = conj_transpose(a, xp)  # row volume: same nonzero singular values
    return log_gram_volume(a, xp) if log else gram_volume(a, xp)
