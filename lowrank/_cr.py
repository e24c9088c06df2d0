"""CR (column-row) approximation of matrix products: sampled and top-k factors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from . import _cr_checks as _checks
from ._agnostic import _cr as _agn
from ._cr_expected import cr_expected_error
from ._dask import is_dask_array
from ._lib import _compat, _validation
from ._lib._random import Random
from ._lib._traced import refuse_traced
from ._lib._typing import Array, ArrayNamespace, RNGLike

# what makes sampled and top-k selections untraceable (jax.jit)
_STEP = "the power-of-two scaling of the norms and the selection of the indices"

__all__ = ["CRFactors", "CRNorms", "cr_expected_error", "cr_factors", "cr_matmul", "cr_norms"]


class CRFactors(NamedTuple):
    """Column-row factors with ``C @ R ≈ a @ b``.

    Attributes
    ----------
    C : array of shape (..., n, k)
        Selected columns of ``a``, each scaled by ``sign(λ_j)·sqrt(|λ_j|)``.
    R : array of shape (..., k, m)
        The matching rows of ``b``, each scaled by ``sqrt(|λ_j|)``.
    indices : int64 array of shape (..., k)
        Selected indices ``s_j`` into the inner dimension, sorted ascending. Sampling with
        replacement keeps repeated indices (adjacent after sorting).
    weights : array of shape (..., k)
        The per-pair weights ``λ_j`` actually applied:
        ``C @ R = Σ_j λ_j a[..., :, s_j] b[..., s_j, :]``. They are ``1/(rank·p_j)`` for
        i.i.d. sampling, ``1/π_j`` without replacement, 1 for ``"topk"`` and the optimal
        diagonal for ``rescale="diagonal"``.
    """

    C: Array
    R: Array
    indices: Array
    weights: Array


class CRNorms(NamedTuple):
    """Precomputed norms of the outer-product factors, reusable across calls.

    Attributes
    ----------
    columns : array of shape (..., l)
        Euclidean norms of the columns of ``a``.
    rows : array of shape (..., l)
        Euclidean norms of the rows of ``b``.
    """

    columns: Array
    rows: Array


def cr_norms(a: Array, b: Array, /, *, xp: ArrayNamespace | None = None) -> CRNorms:
    """Column norms of `a` and row norms of `b` in one fused pass.

    Pass the result (or a ``(columns, rows)`` pair, either entry ``None``) as ``norms=``
    to :func:`cr_factors`, :func:`cr_matmul` or :func:`cr_expected_error` to skip the norm
    pass, e.g. when one fixed weight matrix ``b`` multiplies many inputs ``a``.

    Parameters
    ----------
    a : array of shape (..., n, l)
        Left factor.
    b : array of shape (..., l, m)
        Right factor.
    xp : array_namespace, optional
        The standard-compatible namespace for `a` and `b`. Default: infer.

    Returns
    -------
    CRNorms
        ``columns`` (``‖a[..., :, i]‖``) and ``rows`` (``‖b[..., i, :]‖``), shape (..., l).

    See Also
    --------
    cr_factors : Uses the norms for the optimal probabilities and top-k selection.

    Examples
    --------
    >>> import numpy as np
    >>> from lowrank import cr_matmul, cr_norms
    >>> rng = np.random.default_rng(0)
    >>> W = rng.standard_normal((300, 50))  # one fixed weight matrix
    >>> X = rng.standard_normal((40, 300))
    >>> norms = cr_norms(X, W)
    >>> norms.columns.shape, norms.rows.shape
    ((300,), (300,))
    >>> X2 = rng.standard_normal((40, 300))  # a new input: reuse the row norms of W
    >>> cr_matmul(X2, W, 100, norms=(None, norms.rows), rng=0).shape
    (40, 50)
    """
    if is_dask_array(a) or is_dask_array(b):
        return _dask_cr().cr_norms(a, b, xp)
    xp, a, b, out = _checks.inputs(a, b, xp)
    na, nb = _checks.norms_for(a, b, None, needed=True, check_finite=False, xp=xp)
    return CRNorms(xp.astype(na, out, copy=False), xp.astype(nb, out, copy=False))


def cr_factors(
    a: Array,
    b: Array,
    /,
    rank: int,
    *,
    method: str = "sample",
    probabilities: str | Array = "optimal",
    replace: bool = True,
    rescale: str = "none",
    norms: CRNorms | tuple[Array | None, Array | None] | None = None,
    check_finite: bool = True,
    rng: RNGLike = None,
    xp: ArrayNamespace | None = None,
) -> CRFactors:
    r"""Column-row factors ``C @ R ≈ a @ b`` from `rank` columns of `a` and rows of `b`.

    Parameters
    ----------
    a : array of shape (..., n, l)
        Left factor. Integer and bool inputs compute in float64.
    b : array of shape (..., l, m)
        Right factor; batch dimensions broadcast against `a`'s.
    rank : int
        Number of draws (``method="sample"``, ``replace=True``; may exceed ``l``) or of
        distinct indices (``min(rank, l)`` for ``"topk"`` and ``replace=False``).
    method : {"sample", "topk", "auto"}, default "sample"
        ``"sample"``: random draws scaled to an unbiased estimate. ``"topk"``: the
        indices with the largest ``‖a_i‖·‖b_i‖``, unscaled; ties keep the smaller index.
        ``"auto"``: per matrix, whichever of the two has the smaller predicted squared
        error (i.i.d. formula against the top-k remainder, both estimated with 16
        Gaussian probes of ``a @ b``, ~``16 (nl + lm)`` flops); top-k is biased, so
        use ``"sample"`` where an unbiased estimate is needed.
    probabilities : {"optimal", "uniform"} or array of shape (l,) or (..., l)
        Sampling distribution. ``"optimal"`` is ``p_i ∝ ‖a_i‖·‖b_i‖`` (uniform if all
        are 0). A user array must be >= 0, sum to 1, and be > 0 wherever
        ``‖a_i‖·‖b_i‖ > 0``. Only for ``method="sample"``.
    replace : bool, default True
        ``True``: i.i.d. draws with weights ``1/(rank·p_i)``. ``False``:
        randomized systematic sampling with inclusion probabilities
        ``π_i = min(1, c·p_i)``, ``Σπ_i = rank``, and Horvitz–Thompson weights ``1/π_i``.
    rescale : {"none", "diagonal"}, default "none"
        ``"diagonal"`` replaces the weights by the least-squares optimal diagonal for the
        chosen indices, from Hadamard identities, never forming ``a @ b``.
    norms : CRNorms or (columns, rows) pair, optional
        Precomputed :func:`cr_norms`; an entry ``None`` is computed. Trusted as given.
    check_finite : bool, default True
        Reject NaN/Inf, read off the norms at no extra cost (uniform: a full pass).
    rng : None, int, or a numpy/torch/cupy Generator, optional
        Randomness; the same seed gives the same result on the same backend and device.
    xp : array_namespace, optional
        The standard-compatible namespace for `a` and `b`. Default: infer.

    Returns
    -------
    CRFactors
        ``(C, R, indices, weights)`` in the dtype and on the device of the inputs.

    Raises
    ------
    ValueError
        Mismatched inner dimensions, ``rank < 1``, invalid probabilities (wrong shape,
        negative, not summing to 1, or 0 on a nonzero outer product), NaN/Inf.
    TypeError
        Complex or non-numeric inputs, mixed namespaces.

    See Also
    --------
    cr_matmul : The product ``C @ R`` directly.
    cr_expected_error : The expected squared error of each method.

    Notes
    -----
    With ``x_i = a[:, i]`` and ``y_i = b[i, :]``, ``a @ b = Σ_i x_i y_iᵀ``. For i.i.d.
    draws, ``E[C R] = a @ b`` and

    .. math:: E\|CR - ab\|_F^2 = \frac{1}{r}\Big(\sum_i \frac{\|x_i\|^2\|y_i\|^2}{p_i}
              - \|ab\|_F^2\Big),

    minimised by ``p_i ∝ ‖x_i‖‖y_i‖`` [1]_. Without replacement the
    estimate ``Σ_{i∈S} x_i y_iᵀ/π_i`` is unbiased for any order of the systematic
    sweep; its variance ``Σ_ij (π_ij/(π_i π_j) − 1)⟨x_i y_iᵀ, x_j y_jᵀ⟩`` depends on the
    pair inclusion probabilities ``π_ij`` of the random order. Batches are drawn one
    after another from one generator.

    References
    ----------
    .. [1] P. Drineas, R. Kannan, M. W. Mahoney, "Fast Monte Carlo algorithms for
       matrices I: approximating matrix multiplication", SIAM J. Comput. 36(1), 2006;
       https://kexue.fm/archives/10427

    Examples
    --------
    >>> import numpy as np
    >>> from lowrank import cr_factors
    >>> rng = np.random.default_rng(0)
    >>> a = rng.standard_normal((30, 200)) * (np.arange(1, 201) ** -1.0)
    >>> b = rng.standard_normal((200, 20))
    >>> C, R, idx, w = cr_factors(a, b, 40, rng=0)
    >>> C.shape, R.shape, idx.shape
    ((30, 40), (40, 20), (40,))
    >>> top = cr_factors(a, b, 40, method="topk")
    >>> bool(np.all(top.weights == 1)), bool(np.all(np.diff(top.indices) > 0))
    (True, True)
    """
    if is_dask_array(a) or is_dask_array(b):
        return _dask_cr().cr_factors(a, b, rank, method=method, probabilities=probabilities,
                                     replace=replace, rescale=rescale, norms=norms,
                                     check_finite=check_finite, rng=rng, xp=xp)
    refuse_traced("cr_factors", _STEP, a, b)
    xp, a, b, out = _checks.inputs(a, b, xp)
    plan = _checks.plan(rank, method, probabilities, replace, rescale, a, xp)
    C, R, idx, lam = _factors(a, b, plan, norms, check_finite, rng, xp)
    return CRFactors(
        *(xp.astype(x, out, copy=False) for x in (C, R)), idx, xp.astype(lam, out, copy=False)
    )


def _dask_cr() -> Any:
    """The dask CR module (imported on first dask input only)."""  # numpydoc ignore=RT01
    from ._dask import _cr

    return _cr


def _factors(
    a: Array,
    b: Array,
    plan: _agn.CRPlan,
    norms: object,
    check_finite: bool,
    rng: RNGLike,
    xp: ArrayNamespace,
    body: Callable[..., Any] = _agn.factors,
) -> Any:
    """Norms, support check, then the agnostic body with the dispatched gather."""  # numpydoc ignore=PR01,RT01
    uniform = isinstance(plan.probabilities, str) and plan.probabilities == "uniform"
    needed = plan.method != "sample" or not uniform
    # norms of power-of-two scaled inputs: the selection and weights are scale-free
    na, nb, _, _ = _checks.scaled_norms(
        a, b, norms, needed=needed, check_finite=check_finite, xp=xp
    )
    if not isinstance(plan.probabilities, str):
        _checks.check_support(plan.probabilities, na, nb, xp)
    rand = Random(rng, xp, _compat.device(a))
    return body(a, b, na, nb, plan, rand, _checks.gather_op(xp), xp)


def cr_matmul(
    a: Array,
    b: Array,
    /,
    rank: int,
    *,
    method: str = "sample",
    probabilities: str | Array = "optimal",
    replace: bool = True,
    rescale: str = "none",
    norms: CRNorms | tuple[Array | None, Array | None] | None = None,
    check_finite: bool = True,
    rng: RNGLike = None,
    xp: ArrayNamespace | None = None,
) -> Array:
    """Approximate ``a @ b`` by the CR product of `rank` sampled (or top) outer products.

    Parameters
    ----------
    a : array of shape (..., n, l)
        Left factor.
    b : array of shape (..., l, m)
        Right factor.
    rank : int
        Number of draws (or distinct indices); see :func:`cr_factors`.
    method : {"sample", "topk", "auto"}, default "sample"
        See :func:`cr_factors`.
    probabilities : {"optimal", "uniform"} or array of shape (l,) or (..., l)
        See :func:`cr_factors`.
    replace : bool, default True
        See :func:`cr_factors`.
    rescale : {"none", "diagonal"}, default "none"
        See :func:`cr_factors`. When rescaling would cost about as much as ``a @ b``
        itself (flop model, e.g. ``rank`` beyond ~l/4 for square-ish products), the
        exact product is returned instead: cheaper, and its error is 0.
    norms : CRNorms or (columns, rows) pair, optional
        Precomputed norms (:func:`cr_norms`); skips the norm pass over the inputs.
    check_finite : bool, default True
        See :func:`cr_factors`.
    rng : None, int, or a numpy/torch/cupy Generator, optional
        Randomness; the same seed gives the same result on the same backend and device.
    xp : array_namespace, optional
        The standard-compatible namespace for `a` and `b`. Default: infer.

    Returns
    -------
    array of shape (..., n, m)
        ``C @ R`` with the factors of :func:`cr_factors` (same draws for the same `rng`),
        as one product of the gathered factors per matrix.

    See Also
    --------
    cr_factors : The factors themselves.

    Notes
    -----
    Repeated i.i.d. draws of one index carry equal weights, so they are merged into one
    column of ``C`` (and row of ``R``) with the summed weight before the product: the
    estimate is the same (up to rounding), and the product's inner dimension is the
    number of distinct indices. Optimal sampling of skewed data repeats its heavy
    indices often (e.g. ~290 distinct of 512 draws over 8192 outer products with norms
    ∝ 1/i), so the product costs proportionally less.

    Examples
    --------
    >>> import numpy as np
    >>> from lowrank import cr_expected_error, cr_matmul
    >>> rng = np.random.default_rng(1)
    >>> a = rng.standard_normal((50, 400)) * np.arange(1, 401) ** -1.0
    >>> b = rng.standard_normal((400, 60))
    >>> errs = [np.sum((cr_matmul(a, b, 64, rng=s) - a @ b) ** 2) for s in range(200)]
    >>> bool(abs(np.mean(errs) / cr_expected_error(a, b, 64) - 1) < 0.2)
    True
    """
    if is_dask_array(a) or is_dask_array(b):
        return _dask_cr().cr_matmul(a, b, rank, method=method, probabilities=probabilities,
                                    replace=replace, rescale=rescale, norms=norms,
                                    check_finite=check_finite, rng=rng, xp=xp)
    refuse_traced("cr_matmul", _STEP, a, b)
    xp, a, b, out = _checks.inputs(a, b, xp)
    plan = _checks.plan(rank, method, probabilities, replace, rescale, a, xp)
    n, inner, m = a.shape[-2], a.shape[-1], b.shape[-1]
    if plan.rescale == "diagonal" and _agn.diagonal_costs_more(n, inner, m, plan.rank):
        # rescaling would cost as much as the product itself: the exact product is
        # then both cheaper and exact (the rescaled error is >= 0)
        if check_finite:
            _validation.check_finite(a, "a", xp)
            _validation.check_finite(b, "b", xp)
        return xp.astype(a @ b, out, copy=False)
    prod = _factors(a, b, plan, norms, check_finite, rng, xp, body=_agn.product)
    return xp.astype(prod, out, copy=False)
