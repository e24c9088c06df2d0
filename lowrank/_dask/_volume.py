"""Gram volumes of dask arrays: lazy, batched over chunks, TSQR for one tall matrix.

A stack ``(..., n, k)`` is processed chunk by chunk along its batch axes (each matrix
whole in one chunk) by the NumPy code. A single matrix chunked by rows is reduced by
TSQR: ``aᴴ a = Σ R_iᴴ R_i`` for the R factors of its row chunks, so the volume of the
stacked ``R_i`` is that of ``a`` and only ``k × k`` blocks leave the chunks. Results are
lazy dask arrays; NaN/Inf (``check_finite``) raise when they are computed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._graph import task

__all__ = ["volume"]


def _qr_r(block: Any) -> Any:
    return np.linalg.qr(block, mode="r")


def _stacked_volume(rs: list[Any], func: Any) -> Any:
    return func(np.concatenate(rs, axis=0))


def volume(a: Any, func: Any, *, xp: Any, longer: bool) -> Any:
    """Lazy ``func`` (a NumPy volume of one array) over the dask array ``a``."""  # numpydoc ignore=PR01,RT01
    import dask.array as da

    if xp is not None:
        msg = f"`xp` must be None for a dask array `a`; got {getattr(xp, '__name__', xp)}"
        raise TypeError(msg)
    if a.ndim < 2:
        msg = f"`a` must have ndim >= 2; got shape {a.shape}"
        raise ValueError(msg)
    kind = np.dtype(a.dtype).kind
    if kind not in "biufc":
        msg = f"`a` must have a numeric dtype; got {a.dtype}"
        raise TypeError(msg)
    dtype = func(np.ones((1, 1), dtype=a.dtype)).dtype  # the NumPy path's result dtype
    if kind in "biu":
        a = a.astype(np.float64)
    if longer and a.shape[-2] < a.shape[-1]:  # aᴴ has the same nonzero singular values
        a = da.swapaxes(a.conj() if kind == "c" else a, -1, -2)
    a = a.rechunk({a.ndim - 1: -1})
    if a.ndim == 2 and len(a.chunks[0]) > 1:
        rs = [task(_qr_r)(blk) for blk in a.to_delayed()[:, 0]]
        out = task(_stacked_volume)(rs, func)
        return da.from_delayed(out, shape=(), dtype=dtype).astype(dtype)
    a = a.rechunk({a.ndim - 2: -1})
    return da.map_blocks(func, a, drop_axis=[a.ndim - 2, a.ndim - 1], dtype=dtype,
                         meta=np.empty((0,) * (a.ndim - 2), dtype=dtype))
