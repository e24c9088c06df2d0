"""Errors of CR selections: exact for deterministic ones, Monte Carlo for random ones.

For a selection ``(s, λ)`` write the dense coefficients ``c_i = Σ_{j: s_j = i} λ_j`` and
``d = c − 1``; then ``C R − a b = Σ_i d_i x_i y_iᵀ`` and

    ‖C R − a b‖_F² = dᵀ [(aᵀa) ∘ (b bᵀ)] d,

so one l×l Gram matrix prices any number of selections in O(l²) each. When
``l (n + m) >= n m`` the product ``a b`` is cheaper than that Gram matrix, and each
selection is priced as ``‖a b − C R‖_F²`` instead. Inputs arrive scaled to entries <= 1
(``_cr_scale``), so none of these squares overflows.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._lib._compat import device
from . import _cr_scale as _scale

__all__ = ["ErrorPricer", "choose_method", "estimate", "pricer"]

_PROBES = 16  # Gaussian probes of the method predictor: relative noise ~ sqrt(2/16)


class ErrorPricer(NamedTuple):
    """Precomputed float64 data that prices selections of one 2-D problem."""  # numpydoc ignore=PR01

    a: Any
    b: Any
    gram: Any  # (aᵀa) ∘ (b bᵀ), or None on the product route
    product: Any  # a @ b, or None on the Gram route


def pricer(a: Any, b: Any, xp: Any) -> ErrorPricer:
    """The cheaper of the two routes for the 2-D problem ``a @ b``."""  # numpydoc ignore=PR01,RT01
    a, b = xp.astype(a, xp.float64), xp.astype(b, xp.float64)
    n, inner, m = a.shape[0], a.shape[1], b.shape[1]
    if inner * (n + m) < n * m:
        return ErrorPricer(a, b, (a.mT @ a) * (b @ b.mT), None)
    return ErrorPricer(a, b, None, a @ b)


def price(pr: ErrorPricer, idx: Any, lam: Any, xp: Any) -> float:
    """‖Σ_j λ_j x_{s_j} y_{s_j}ᵀ − a b‖_F² for indices ``idx`` and weights ``lam``."""  # numpydoc ignore=PR01,RT01
    lam = xp.astype(lam, xp.float64)
    inner = pr.a.shape[1]
    if pr.gram is not None:
        hits = idx[:, None] == xp.arange(inner, dtype=idx.dtype, device=device(idx))[None, :]
        d = xp.sum(xp.astype(hits, xp.float64) * lam[:, None], axis=0) - 1.0
        err = float(xp.sum(d * (pr.gram @ d)))
    else:
        approx = (xp.take(pr.a, idx, axis=1) * lam) @ xp.take(pr.b, idx, axis=0)
        err = float(xp.sum((pr.product - approx) ** 2))
    return max(err, 0.0)  # a PSD quadratic form: negative only by round-off


def estimate(pr: ErrorPricer, draw: Any, samples: int, xp: Any) -> tuple[float, float]:
    """(mean, standard error) of the exact errors of ``samples`` independent selections.

    ``draw()`` returns one ``(idx, lam)``; the mean is an unbiased estimate of the
    expected squared error, and its standard error is ``std(errors) / sqrt(samples)``.
    """  # numpydoc ignore=PR01,RT01
    errs = [price(pr, *draw(), xp) for _ in range(samples)]
    mean = math.fsum(errs) / samples
    if samples < 2:
        return mean, math.inf
    var = math.fsum((e - mean) ** 2 for e in errs) / (samples - 1)
    return mean, math.sqrt(var / samples)


def choose_method(a: Any, b: Any, w: Any, p: Any, rank: int, rand: Any, xp: Any) -> str:
    """``"topk"`` or ``"sample"``: whichever has the smaller predicted squared error.

    i.i.d. sampling: ``(Σ w_i²/p_i − ‖ab‖²)/r``; top-k: ``‖Σ_{i∉S} x_i y_iᵀ‖²``. Both
    squared norms are estimated with Gaussian probes, ``‖M‖_F² ≈ ‖M g‖²/q``, at a cost of
    ``q (n l + l m)`` flops (``q = 16``), far below the CR product itself.
    """  # numpydoc ignore=PR01,RT01
    inner = a.shape[1]
    if rank >= inner:
        return "topk"  # keeps every index: exact
    # entries <= 1 (any scale of the inputs); w ranks the top-k set as the selection will
    a = _scale.normalized(xp.astype(a, xp.float64), xp)
    b = _scale.normalized(xp.astype(b, xp.float64), xp)
    w2 = xp.linalg.vector_norm(a, axis=0) * xp.linalg.vector_norm(b, axis=1)
    g = rand.standard_normal((b.shape[1], _PROBES), xp.float64)
    order = xp.argsort(-w, stable=True)
    tail = xp.sort(order[rank:])
    full = float(xp.sum((a @ (b @ g)) ** 2)) / _PROBES
    missed = xp.take(a, tail, axis=1) @ (xp.take(b, tail, axis=0) @ g)
    topk_err = float(xp.sum(missed**2)) / _PROBES
    positive = p > 0
    terms = xp.where(positive, (w2 * w2) / xp.where(positive, p, 1.0), 0.0)
    sample_err = max(float(xp.sum(terms)) - full, 0.0) / rank
    return "topk" if topk_err <= sample_err else "sample"
