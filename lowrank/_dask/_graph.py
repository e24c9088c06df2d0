"""Orthonormalisation of a row-chunked block inside one graph execution.

A block ``Y`` arrives as one Delayed per row chunk; the result is one Delayed per row
chunk of an orthonormal ``Q``. Only small matrices (Gram matrices, ``Qᴴ Y``, stacked TSQR
factors) are reduced over the chunks, by trees of small tasks, so the whole
orthonormalisation runs in the same graph execution as the product that made ``Y``.

CholeskyQR2 (Gram reduced over chunks) is the fast route. Its decisions -- is the Gram
matrix positive definite, are its pivots above round-off -- are made by tasks, not by the
client: they return a flag, and the tasks of the Householder route (distributed TSQR:
a QR per chunk, a QR of the stacked R factors, the local Q times its block) run only
when the flag says the fast route failed; otherwise each of them returns None at once.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
from dask import delayed

from . import _kernels as k
from ._exec import tree

__all__ = ["at", "next_block", "orthonormal", "pinned", "task", "tree_max", "tree_sum"]


def task(func: Any, nout: int | None = None) -> Any:
    """``dask.delayed(func)`` with unique keys (arguments are never hashed)."""  # numpydoc ignore=PR01,RT01
    return delayed(func, pure=False, nout=nout)


# Worker address per row chunk while a computation is being built (distributed only):
# every task of chunk i runs where chunk i of ``a`` and its basis rows live, so a pass
# moves only the small reduced matrices between workers, never a chunk.
_PINS: ContextVar[list[str] | None] = ContextVar("lowrank_dask_pins", default=None)


@contextmanager
def pinned(pins: list[str] | None) -> Any:
    """Build the tasks of row chunk i on worker ``pins[i]`` inside this context."""  # numpydoc ignore=PR01,YLD01
    token = _PINS.set(pins)
    try:
        yield
    finally:
        _PINS.reset(token)


def at(i: int, func: Any, nout: int | None = None) -> Any:
    """:func:`task` for row chunk ``i``, restricted to its worker when pinned."""  # numpydoc ignore=PR01,RT01
    pins = _PINS.get()

    def call(*args: Any) -> Any:
        if pins is None:
            return task(func, nout)(*args)
        import dask

        with dask.annotate(workers=[pins[i]], allow_other_workers=False):
            return task(func, nout)(*args)

    return call


def tree_sum(parts: list[Any]) -> Any:
    """Tree sum of Delayed arrays (None entries count as 0)."""  # numpydoc ignore=PR01,RT01
    return tree(k.add, parts)


def tree_max(parts: list[Any]) -> Any:
    """Tree maximum of Delayed floats."""  # numpydoc ignore=PR01,RT01
    return tree(max, parts)


# --- chunk-level functions (plain NumPy; ``st`` is a (matrix, ok) flag of chol_step) ----

def _when_ok(st: tuple[Any, bool], func: Any, *args: Any) -> Any:
    return func(*args) if st[1] else None


def _when_bad(st: tuple[Any, bool], func: Any, *args: Any) -> Any:
    return None if st[1] else func(*args)


def _times(y: Any, st: tuple[Any, bool]) -> Any:
    return y @ st[0]


def _proj(q: Any, y: Any) -> Any:
    """``q_iᴴ y_i`` (None without a basis)."""  # numpydoc ignore=PR01,RT01
    return None if q is None or y is None else k.qh_y(q, y)


def _sub(y: Any, q: Any, coef: Any) -> Any:
    """``y_i − q_i coef``."""  # numpydoc ignore=PR01,RT01
    return y if q is None or coef is None else y - k.q_times(q, coef)


def _second(g: Any, first: tuple[Any, bool], coef: Any, dtype: Any) -> tuple[Any, bool]:
    """Second CholeskyQR round; fails if the first did or ``‖Qᴴ Z‖_F > 1/2``."""  # numpydoc ignore=PR01,RT01
    if not first[1] or (coef is not None and np.linalg.norm(coef) > 0.5):
        return None, False
    return k.chol_step(g, 1.0, dtype, False)


def _pick(st: tuple[Any, bool], z: Any, fallback: Any) -> Any:
    return z @ st[0] if st[1] else fallback


def _floor(size_sq: float, dtype: Any) -> float:
    return k.NOISE * float(np.finfo(dtype).eps) * math.sqrt(size_sq)


def _qr_r(y: Any) -> Any:
    return np.linalg.qr(y, mode="r")


def _stacked(rs: list[Any]) -> tuple[list[Any], Any]:
    """QR of the stacked chunk factors: per-chunk blocks of its Q, and its R."""  # numpydoc ignore=PR01,RT01
    q, r = np.linalg.qr(np.concatenate(rs, axis=0))
    out, start = [], 0
    for block in rs:
        out.append(q[start:start + block.shape[0]])
        start += block.shape[0]
    return out, r


def _local_q(y: Any, stacked: tuple[list[Any], Any], i: int) -> Any:
    return np.linalg.qr(y)[0] @ stacked[0][i]


def _small_svd(stacked: tuple[list[Any], Any], floor: float) -> tuple[Any, Any]:
    """``(Ur, keep)``: left singular vectors of R and which directions are real."""  # numpydoc ignore=PR01,RT01
    r = stacked[1]
    if not np.all(np.isfinite(r)):  # NaN/Inf input: reported by the client after the pass
        return np.eye(r.shape[0], r.shape[1], dtype=r.dtype), np.zeros(r.shape[1], dtype=bool)
    ur, s, _ = np.linalg.svd(r)
    return ur, s > floor


def _replace(qy: Any, svd: tuple[Any, Any], seed: tuple[int, ...], dtype: Any) -> Any:
    """Real directions of ``qy Ur`` kept, the others Gaussian (seeded per chunk)."""  # numpydoc ignore=PR01,RT01
    real = np.float32 if dtype in (np.float32, np.complex64) else np.float64
    g = np.random.default_rng(list(seed)).standard_normal(qy.shape, dtype=real).astype(dtype)
    return np.where(svd[1][None, :], qy @ svd[0], g)


# --- graph builders -------------------------------------------------------------------

def _tsqr(ys: list[Any], st: Any) -> tuple[list[Any], Any]:
    """Distributed Householder QR of ``Y`` (run only when ``st`` failed): Q chunks, R."""  # numpydoc ignore=PR01,RT01
    rs = [at(i, _when_bad)(st, _qr_r, y) for i, y in enumerate(ys)]
    stacked = task(_when_bad)(st, _stacked, rs)
    return [at(i, _when_bad)(st, _local_q, y, stacked, i) for i, y in enumerate(ys)], stacked


def _cholesky_qr2(ys: list[Any], dtype: Any, wide: bool, floor: Any = None) -> tuple[Any, ...]:
    """First CholeskyQR round of ``Y``: ``(Z chunks, flag)``."""  # numpydoc ignore=PR01,RT01
    c = task(k.pow2_factor)(tree_max([at(i, k.maxabs)(y) for i, y in enumerate(ys)]), dtype, 4)
    st1 = task(k.chol_step)(tree_sum([at(i, k.gram)(y, c, wide) for i, y in enumerate(ys)]),
                            c, dtype, wide,
                            floor)
    zs = [at(i, _when_ok)(st1, _times, y, st1) for i, y in enumerate(ys)]
    return zs, st1


def orthonormal(ys: list[Any], dtype: Any, wide: bool) -> list[Any]:
    """Orthonormal basis of range(Y) by CholeskyQR2, TSQR when ill-conditioned."""  # numpydoc ignore=PR01,RT01
    zs, st1 = _cholesky_qr2(ys, dtype, wide)
    grams = [at(i, k.gram)(z, 1.0, False) for i, z in enumerate(zs)]
    st2 = task(_second)(tree_sum(grams), st1, None, dtype)
    fallback, _ = _tsqr(ys, st2)
    return [at(i, _pick)(st2, z, f) for i, (z, f) in enumerate(zip(zs, fallback, strict=True))]


def next_block(ys: list[Any], qs: list[Any] | None, dtype: Any, wide: bool,
               seed: tuple[int, ...]) -> list[Any]:
    """Orthonormal block orthogonal to ``Q`` holding the new directions of ``Y``.

    Block classical Gram–Schmidt twice with CholeskyQR, as in the in-memory path: a
    direction counts only if its pivot exceeds ``NOISE·eps·‖Y‖_F``. Otherwise
    (:func:`_deflated`) the real directions are kept from a TSQR + SVD of the projected
    block and the others replaced by Gaussian vectors, projected twice and orthonormalised
    by TSQR.
    """  # numpydoc ignore=PR01,RT01
    qs = [None] * len(ys) if qs is None else qs
    pairs = list(enumerate(zip(qs, ys, strict=True)))
    floor = task(_floor)(tree_sum([at(i, k.sqsum)(y) for i, (_, y) in pairs]), dtype)
    c1 = tree_sum([at(i, _proj)(q, y) for i, (q, y) in pairs])
    y1 = [at(i, _sub)(y, q, c1) for i, (q, y) in pairs]
    zs, st1 = _cholesky_qr2(y1, dtype, wide, floor)
    pairs = list(enumerate(zip(qs, zs, strict=True)))
    c2 = tree_sum([at(i, _proj)(q, z) for i, (q, z) in pairs])
    z2 = [at(i, _sub)(z, q, c2) for i, (q, z) in pairs]
    grams = [at(i, k.gram)(z, 1.0, False) for i, z in enumerate(z2)]
    st2 = task(_second)(tree_sum(grams), st1, c2, dtype)
    fallback = _deflated(y1, qs, floor, st2, seed, dtype)
    return [at(i, _pick)(st2, z, f) for i, (z, f) in enumerate(zip(z2, fallback, strict=True))]


def _project_bad(zs: list[Any], qs: list[Any], st: Any) -> list[Any]:
    """``Z − Q (Qᴴ Z)`` on the fallback route."""  # numpydoc ignore=PR01,RT01
    pairs = list(enumerate(zip(qs, zs, strict=True)))
    coef = tree_sum([at(i, _when_bad)(st, _proj, q, z) for i, (q, z) in pairs])
    return [at(i, _when_bad)(st, _sub, z, q, coef) for i, (q, z) in pairs]


def _deflated(y1: list[Any], qs: list[Any], floor: Any, st: Any, seed: tuple[int, ...],
              dtype: Any) -> list[Any]:
    """Rank-revealing fallback of :func:`next_block` (tasks idle unless ``st`` failed)."""  # numpydoc ignore=PR01,RT01
    y2 = _project_bad(y1, qs, st)
    qy, stacked = _tsqr(y2, st)
    svd = task(_when_bad)(st, _small_svd, stacked, floor)
    zs = [at(i, _when_bad)(st, _replace, q, svd, (*seed, i), dtype) for i, q in enumerate(qy)]
    zs = _project_bad(_project_bad(zs, qs, st), qs, st)
    return _tsqr(zs, st)[0]
