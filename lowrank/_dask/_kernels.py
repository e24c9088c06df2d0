"""NumPy functions run inside the dask tasks: per-chunk products and small factorisations.

Everything here is plain NumPy on one row chunk or on a small (ℓ × ℓ, n × ℓ) matrix. A
failing Cholesky factorisation never raises inside a task: it returns a flag, and the
tasks of the Householder (TSQR) route, which do nothing while the flag says the Cholesky
route succeeded, take over.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "NOISE", "add", "adjoint", "chol_step", "forward", "gram", "h", "maxabs",
    "pow2_factor", "q_times", "qh_y", "sqsum", "stats",
]

# A direction is real above NOISE·eps of the block (the in-memory path's threshold).
NOISE = 128.0


def h(x: Any) -> Any:
    """Conjugate transpose of a 2-D array."""  # numpydoc ignore=PR01,RT01
    return x.conj().T if np.iscomplexobj(x) else x.T


def qh_y(blocks: Any, y: Any) -> Any:
    """``Qᴴ y`` for the basis blocks of one chunk, block by block (no concatenated copy)."""  # numpydoc ignore=PR01,RT01
    if isinstance(blocks, np.ndarray):
        return h(blocks) @ y
    return np.concatenate([h(b) @ y for b in blocks], axis=0)


def q_times(blocks: Any, coef: Any) -> Any:
    """``Q coef`` for the basis blocks of one chunk, block by block (no concatenated copy)."""  # numpydoc ignore=PR01,RT01
    if isinstance(blocks, np.ndarray):
        return blocks @ coef
    out, start = None, 0
    for b in blocks:
        part = b @ coef[start:start + b.shape[1]]
        out = part if out is None else out.__iadd__(part)
        start += b.shape[1]
    return out


def add(x: Any, y: Any) -> Any:
    """``x + y`` where ``None`` is the neutral element (skipped branches)."""  # numpydoc ignore=PR01,RT01
    if x is None:
        return y
    return x if y is None else x + y


def _work(a: Any, dtype: Any) -> Any:
    return a if a.dtype == dtype else a.astype(dtype)


def forward(a: Any, x: Any, c: float, dtype: Any) -> Any:
    """``c · a_i @ x`` in the working dtype (one chunk of a forward product)."""  # numpydoc ignore=PR01,RT01
    with np.errstate(invalid="ignore", over="ignore"):
        y = _work(a, dtype) @ x
        return y if c == 1.0 else y * dtype.type(c)


def forward_norm(a: Any, x: Any, dtype: Any) -> tuple[Any, float, float]:
    """``(a_i @ x, max|a_i|, ‖a_i / 2^e‖²)``: the sketch and the chunk's share of ‖a‖_F.

    ``2^e`` is the power of two nearest the chunk's largest entry (the scaling is exact),
    so the sum of squares neither overflows nor underflows.
    """  # numpydoc ignore=PR01,RT01
    w = _work(a, dtype)
    big = chunk_max(w)
    with np.errstate(invalid="ignore", over="ignore"):
        return w @ x, big, _scaled_sqsum(w, big)


def _slabs(w: Any) -> Any:
    """Row slabs of about 4 MiB: whole-chunk temporaries would double a worker's memory."""  # numpydoc ignore=PR01,YLD01
    rows = max(1, (1 << 22) // max(w.itemsize * w.shape[-1], 1))
    for start in range(0, w.shape[0], rows):
        yield w[start:start + rows]


def _scaled_sqsum(w: Any, big: float) -> float:
    if big == 0.0 or not math.isfinite(big):
        return 0.0 if big == 0.0 else math.nan
    f = w.real.dtype.type(2.0 ** -round(math.log2(big)))
    return float(sum(np.sum(np.abs(s * f).astype(np.float64) ** 2) for s in _slabs(w)))


def chunk_max(w: Any) -> float:
    """``max|w|`` of a chunk, slab by slab (NaN if any entry is NaN, 0 when empty)."""  # numpydoc ignore=PR01,RT01
    if w.size == 0:
        return 0.0
    if np.iscomplexobj(w):
        return float(np.max([np.abs(s).max() for s in _slabs(w)]))
    return float(np.max([np.maximum(s.max(), -s.min()) for s in _slabs(w)]))  # NaN propagates


def adjoint(a: Any, q_blocks: Any, c: float, dtype: Any) -> Any:
    """``c · a_iᴴ q_i`` as ``(q_iᴴ a_i)ᴴ`` (a chunk's share of a reduced product)."""  # numpydoc ignore=PR01,RT01
    with np.errstate(invalid="ignore", over="ignore"):
        w = h(qh_y(q_blocks, _work(a, dtype)))
        return w if c == 1.0 else w * dtype.type(c)


def stats(y: Any) -> tuple[float, bool]:
    """``(max|y|, all finite)`` of a chunk."""  # numpydoc ignore=PR01,RT01
    finite = bool(np.isfinite(y).all())
    return (maxabs(y) if finite else math.inf), finite


def merge_stats(s: tuple[float, bool], t: tuple[float, bool]) -> tuple[float, bool]:
    """Combine two :func:`stats`."""  # numpydoc ignore=PR01,RT01
    return max(s[0], t[0]), s[1] and t[1]


def maxabs(y: Any) -> float:
    """``max|y|`` (0 for an empty chunk or None)."""  # numpydoc ignore=PR01,RT01
    return float(np.abs(y).max()) if y is not None and y.size else 0.0


def sqsum(y: Any) -> float:
    """``‖y‖_F²`` accumulated in float64 (None counts as 0)."""  # numpydoc ignore=PR01,RT01
    if y is None or y.size == 0:
        return 0.0
    return float(np.sum(np.abs(y).astype(np.float64) ** 2))


def pow2_factor(big: float, dtype: Any, window: int) -> float:
    """Power of two bringing ``big`` near 1 when it is outside ``2^±(maxexp/window)``, else 1."""  # numpydoc ignore=PR01,RT01
    top = math.log2(float(np.finfo(dtype).max)) / window
    if not math.isfinite(big) or big == 0.0 or 2.0 ** -top < big < 2.0 ** top:
        return 1.0
    return 2.0 ** -round(math.log2(big))


def gram(y: Any, c: float, wide: bool) -> Any:
    """``(c y)ᴴ (c y)``, in double precision when ``wide`` (single-precision data)."""  # numpydoc ignore=PR01,RT01
    if y is None:
        return None
    z = y if c == 1.0 else y * y.real.dtype.type(c)
    if wide:
        z = z.astype(np.complex128 if np.iscomplexobj(z) else np.float64)
    return h(z) @ z


def chol_step(g: Any, c: float, dtype: Any, wide: bool,
              floor: float | None = None) -> tuple[Any, bool]:
    """``(M, ok)`` with ``M = c · L⁻ᴴ`` for ``g = L Lᴴ`` (the Gram of ``c y``), so ``y M`` is
    orthonormal; ok False when the factor is too ill-conditioned for one CholeskyQR round
    or, with ``floor``, a diagonal entry of ``R = Lᴴ / c`` is at most ``floor``."""  # numpydoc ignore=PR01,RT01
    if g is None or not np.all(np.isfinite(g)):
        return None, False
    try:
        L = np.linalg.cholesky(g)
    except np.linalg.LinAlgError:
        return None, False
    d = np.abs(np.diag(L))
    eps = float(np.finfo(dtype).eps)
    tiny = eps ** 0.5 if wide else eps ** 0.25  # diag ratios bound cond(y) from below
    ok = bool(np.all(d > tiny * d.max())) if d.size else True
    if ok and floor is not None:
        ok = bool(np.all(d / c > floor))
    if not ok:
        return None, False
    return (h(np.linalg.inv(L)) * c).astype(dtype), True
