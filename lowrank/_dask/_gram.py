"""Block Krylov SVD of a row-chunked dask array with one ``aᴴa`` product per read.

Chunk ``i`` of a tall ``a`` contributes ``a_iᴴ (a_i X)`` to ``aᴴa X``: one read of every
chunk applies the normal operator ``M = aᴴa`` to an ``n × b`` block, which is reduced
to the client. The Krylov space therefore lives on the short side (``n × L``, on the
client) and grows by one block per read, where alternating ``a`` and ``aᴴ`` products
needs two reads per block.

With ``P = 2 q + 2`` reads:

1. reads ``1 … 2q+1``: ``V_1 = orth(M Ω)``, ``V_{j+1} = orth(M V_j ⊥ V_1…V_j)``;
2. on the client: Rayleigh–Ritz of ``M`` on ``V = [V_1 … V_2q]`` (whose products
   ``M V`` are known), then one power step on the top ``ℓ = rank + n_oversamples``
   Ritz vectors, free of reads: ``X = orth(M V Z_ℓ)``;
3. read ``P``: ``A X = Q R`` by CholeskyQR2 in-graph (TSQR fallback), ``Q`` kept per row
   chunk; the result is the truncated SVD of ``a X Xᴴ = Q R Xᴴ``.

So ``a Vhᴴ = U S`` holds exactly (up to rounding) and ``U`` is built on the kept ``Q``:
computing it reads ``a`` no more. ``q = 0`` is ``X = orth(M Ω)`` (``ℓ`` wide), one power
iteration where a plain sketch uses the same two reads. When ``2 q b < ℓ`` the whole
basis ``[V_1 … V_{2q+1}]`` is used instead of the Ritz step.

The Ritz values are eigenvalues of ``M``, i.e. squared singular values: they only pick
the directions; ``S`` comes from the SVD of ``R`` (of ``a`` itself, not squared).
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.numpy as npx
import numpy as np

from .._agnostic._orthogonal import next_block
from . import _kernels as k
from ._graph import at, orthonormal, task, tree_sum
from ._svd import Basis, _proj_all
from ._tall import Tall

__all__ = ["gram_krylov"]


def _exponent(big: float) -> int:
    return round(math.log2(big)) if big > 0 and math.isfinite(big) else 0


def _first_chunk(a: Any, x: Any, dtype: Any, norm: bool) -> tuple[Any, int, tuple[float, bool],
                                                                     Any]:
    """``(2^-2e a_iᴴ a_i x, e, (max|a_i|, finite), norm part)`` with ``2^e ≈ max|a_i|``.

    The power of two is applied to the small factors (exact), so the squares of the
    chunk's entries neither overflow nor underflow and the chunk is never copied;
    :func:`_merge` brings the chunks to a common exponent.
    """  # numpydoc ignore=PR01,RT01
    w = k._work(a, dtype)
    big = k.chunk_max(w)  # NaN or Inf when any entry is
    finite = math.isfinite(big)
    e = _exponent(big)
    with np.errstate(invalid="ignore", over="ignore"):
        z = _scaled_normal(w, x, 2.0 ** -e)
    part = (big, k._scaled_sqsum(w, big)) if norm else None
    return z, e, (big if finite else math.inf, finite), part


def _merge(p: tuple[Any, int], q: tuple[Any, int]) -> tuple[Any, int]:
    """Sum of two ``(z, e)`` meaning ``4^e z``, at the larger exponent."""  # numpydoc ignore=PR01,RT01
    e = max(p[1], q[1])
    return _shift(p[0], 2 * (p[1] - e)) + _shift(q[0], 2 * (q[1] - e)), e


def _shift(z: Any, d: int) -> Any:
    return z if d == 0 else z * z.real.dtype.type(2.0 ** max(d, -1000))


def _pair(z: Any, e: int) -> tuple[Any, int]:
    return z, e


def _normal_chunk(a: Any, x: Any, c: float, dtype: Any) -> Any:
    """``c² a_iᴴ (a_i x)`` (one chunk's share of ``c² aᴴa x``)."""  # numpydoc ignore=PR01,RT01
    with np.errstate(invalid="ignore", over="ignore"):
        return _scaled_normal(k._work(a, dtype), x, c)


def _scaled_normal(w: Any, x: Any, c: float) -> Any:
    """``(c w)ᴴ (c w) x`` with the power of two ``c`` applied to the small factors only
    (``c = c₁ c₂``, split so that neither ``c₁ x`` nor ``w c₁ x`` leaves the range)."""  # numpydoc ignore=PR01,RT01
    if c == 1.0:
        return k.h(w) @ (w @ x)
    e = round(math.log2(c))
    real = x.real.dtype.type
    y = w @ (x * real(2.0 ** (e // 2)))
    y *= real(2.0 ** (e - e // 2))
    z = k.h(w) @ y
    z *= real(c)
    return z


def _client_dtype(dtype: Any) -> Any:
    """Double precision for the small client-side work (float32 data included)."""  # numpydoc ignore=PR01,RT01
    return np.dtype(np.complex128 if np.dtype(dtype).kind == "c" else np.float64)


def _first(t: Tall, omega: Any, check_finite: bool, norm: bool) -> tuple[Any, Any]:
    """Read 1: ``M Ω`` (any scale), the NaN/Inf check, ``c`` and the norm parts."""  # numpydoc ignore=PR01,RT01
    from ._exec import tree

    parts = [at(i, _first_chunk, nout=4)(b, omega, t.dtype, norm) for i, b in enumerate(t.blocks)]
    z = tree(_merge, [task(_pair)(p[0], p[1]) for p in parts])
    stats = tree(k.merge_stats, [p[2] for p in parts])
    small = [z, stats] + ([task(list)([p[3] for p in parts])] if norm else [])
    values, _ = t.run(small)
    t.check_first(values[1], check_finite)  # sets c from max|a|
    return values[0][0], (values[2] if norm else None)


def _normal(t: Tall, x: Any) -> Any:
    """One read: ``c² aᴴa x`` on the client."""  # numpydoc ignore=PR01,RT01
    xs = x.astype(t.dtype, copy=False)
    (z,), _ = t.run([tree_sum([at(i, _normal_chunk)(b, xs, t.c, t.dtype)
                               for i, b in enumerate(t.blocks)])])
    return z


def gram_krylov(t: Tall, block: int, n_iter: int, final: int, rand: Any, *,
                check_finite: bool = True, norm: bool = False) -> tuple[Basis, Any]:
    """Basis ``Q`` (kept per chunk) and ``W = (Q R Xᴴ)ᴴ`` after ``2 n_iter + 2`` reads.

    ``block`` is the Krylov block width (the sketch is ``final`` wide when ``n_iter`` is
    0), ``final`` the width ``ℓ`` of the last read. Returns the norm parts of ``‖a‖_F``
    read in the first pass when ``norm``.
    """  # numpydoc ignore=PR01,RT01
    cdt = _client_dtype(t.dtype)
    width = final if n_iter == 0 else block
    omega = rand.standard_normal((t.n, min(width, t.n)), t.dtype)
    z, norms = _first(t, omega, check_finite, norm)
    vs, mvs = [next_block(z.astype(cdt), None, rand, npx)], []
    whole = n_iter == 0 or 2 * n_iter * block < final  # too narrow for the Ritz step
    for j in range(2 * n_iter):
        mvs.append(_normal(t, vs[-1]).astype(cdt))
        room = t.n - sum(v.shape[1] for v in vs)
        if room <= 0:  # the basis spans everything: nothing left to add
            whole = True
            break
        if j < 2 * n_iter - 1 or whole:
            vs.append(next_block(mvs[-1][:, :room], np.concatenate(vs, axis=1), rand, npx))
    if whole:
        x = np.concatenate(vs, axis=1)
    else:
        x = _ritz_step(np.concatenate(vs[:len(mvs)], axis=1), np.concatenate(mvs, axis=1),
                       final, rand)
    return _last(t, x), norms


def _ritz_step(v: Any, mv: Any, final: int, rand: Any) -> Any:
    """``orth(M V Z_ℓ)`` for the top ``ℓ`` eigenvectors ``Z_ℓ`` of ``Vᴴ M V``."""  # numpydoc ignore=PR01,RT01
    t = k.h(v) @ mv
    _, z = np.linalg.eigh((t + k.h(t)) / 2)
    return next_block(mv @ z[:, ::-1][:, :final], None, rand, npx)


def _last(t: Tall, x: Any) -> Basis:
    """Read ``P``: ``c a X = Q R`` in-graph, keeping only ``Y = c a X`` per chunk.

    CholeskyQR2 gives ``Q = Y C`` (``C = M₁ M₂``, small): the normalised block of the
    first round is made again inside the task of its Gram matrix rather than kept, so a
    worker holds one ``rows × ℓ`` block, not two; ``U`` is then ``Y (C U_r)``. When the
    Cholesky route fails, the TSQR fallback's ``Q`` chunks are kept instead. ``W = X Rᴴ``
    with ``R = Qᴴ Y`` (so that ``Q Wᴴ = c a X Xᴴ``).
    """  # numpydoc ignore=PR01,RT01
    from ._graph import _cholesky_qr2, _second, _tsqr

    xs = x.astype(t.dtype)
    ys = t.forward(xs)
    zs, st1 = _cholesky_qr2(ys, t.dtype, t.wide)
    st2 = task(_second)(tree_sum([at(i, k.gram)(z, 1.0, False) for i, z in enumerate(zs)]),
                        st1, None, t.dtype)
    coef = task(_coef)(st1, st2)
    fallback, _ = _tsqr(ys, st2)
    r = tree_sum([at(i, _r_part)(y, coef, f) for i, (y, f) in enumerate(zip(ys, fallback,
                                                                            strict=True))])
    (r, coef), (ykept, fkept) = t.run([r, coef], [ys, fallback])
    w = xs @ k.h(r)
    if coef is None:
        return Basis([[f] for f in fkept], w)
    basis = Basis([[y] for y in ykept], w)
    basis.left = coef
    return basis


def _coef(st1: tuple[Any, bool], st2: tuple[Any, bool]) -> Any:
    """``C = M₁ M₂`` of the Cholesky route (``Q = Y C``), None when it failed."""  # numpydoc ignore=PR01,RT01
    return st1[0] @ st2[0] if st2[1] else None


def _r_part(y: Any, coef: Any, f: Any) -> Any:
    """A chunk's share of ``R = Qᴴ Y``, with ``Q_i = Y_i C`` or the fallback's ``Q_i``."""  # numpydoc ignore=PR01,RT01
    q = f if coef is None else y @ coef
    return k.h(q) @ y
