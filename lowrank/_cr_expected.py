"""Expected squared error of every CR method: exact where it has a closed form, else estimated."""

from __future__ import annotations

from typing import Any

from . import _cr_checks as _checks
from ._agnostic import _cr as _agn
from ._agnostic import _cr_error as _err
from ._agnostic import _cr_scale as _scale
from ._dask import is_dask_array
from ._lib import _compat, _validation
from ._lib._random import Random, check_rng
from ._lib._traced import refuse_traced
from ._lib._typing import Array, ArrayNamespace, RNGLike

__all__ = ["cr_expected_error"]


def cr_expected_error(
    a: Array,
    b: Array,
    /,
    rank: int,
    *,
    method: str = "sample",
    probabilities: str | Array = "optimal",
    replace: bool = True,
    rescale: str = "none",
    norms: Any = None,
    samples: int = 32,
    return_std: bool = False,
    rng: RNGLike = None,
    xp: ArrayNamespace | None = None,
) -> Array | tuple[Array, Array]:
    r"""Expected squared Frobenius error ``E‖C R − a b‖_F²`` of a CR method.

    Exact for i.i.d. sampling (the closed form below) and for the deterministic top-k
    selection (with or without rescaling); an unbiased Monte Carlo estimate, with its
    standard error, for the methods without a closed form (sampling without
    replacement, sampled selections with ``rescale="diagonal"``).

    Parameters
    ----------
    a : array of shape (..., n, l)
        Left factor.
    b : array of shape (..., l, m)
        Right factor.
    rank : int
        Number of draws (or distinct indices), as in :func:`cr_factors`.
    method : {"sample", "topk", "auto"}, default "sample"
        As in :func:`cr_factors`; ``"auto"`` prices the method it picks.
    probabilities : {"optimal", "uniform"} or array of shape (l,) or (..., l)
        The sampling distribution, as in :func:`cr_factors`.
    replace : bool, default True
        As in :func:`cr_factors`.
    rescale : {"none", "diagonal"}, default "none"
        As in :func:`cr_factors`.
    norms : CRNorms or (columns, rows) pair, optional
        Precomputed norms (:func:`cr_norms`).
    samples : int, default 32
        Independent selections averaged where the error has no closed form.
    return_std : bool, default False
        Also return the standard error of the value (0 where it is exact).
    rng : None, int, or a numpy/torch/cupy Generator, optional
        Randomness of the Monte Carlo estimate and of ``method="auto"``'s probes.
    xp : array_namespace, optional
        The standard-compatible namespace for `a` and `b`. Default: infer.

    Returns
    -------
    error : array of shape (...)
        Float64 (0-d for 2-D inputs). It saturates to ``inf`` only where the true
        value exceeds the float64 range (all work is done on power-of-two scaled
        inputs, so entries of any finite size are fine).
    std : array of shape (...)
        Only with ``return_std=True``: the standard error of `error`,
        ``std(errors) / sqrt(samples)`` for an estimate, 0 for an exact value.

    See Also
    --------
    cr_factors : The estimators whose errors these are.

    Notes
    -----
    i.i.d. sampling with replacement [1]_:

    .. math:: E\|CR - ab\|_F^2 = \frac{1}{r}\Big(\sum_i \frac{\|a_i\|^2\|b_i\|^2}{p_i}
              - \|ab\|_F^2\Big),

    which is ``((Σ_i ‖a_i‖‖b_i‖)² − ‖ab‖²)/r`` for the optimal ``p``; ``‖ab‖_F²`` comes
    from ``1ᵀ[(aᵀa) ∘ (b bᵀ)]1`` when ``l(n + m) < n m``. A fixed selection with
    coefficients ``c_i`` (summed weights) has error ``dᵀ[(aᵀa) ∘ (b bᵀ)]d`` with
    ``d = c − 1``: for top-k (``c = 1`` on the kept set) that is
    ``‖Σ_{i∉S} a_i b_iᵀ‖_F²``. Random selections without a closed form are priced this
    way one by one and averaged: ``O(l²)`` per selection after one Gram matrix (or
    ``‖ab − CR‖²`` per selection after one product, whichever route is cheaper).

    References
    ----------
    .. [1] P. Drineas, R. Kannan, M. W. Mahoney, "Fast Monte Carlo algorithms for
       matrices I: approximating matrix multiplication", SIAM J. Comput. 36(1), 2006.

    Examples
    --------
    >>> import numpy as np
    >>> from lowrank import cr_expected_error
    >>> X = np.array([[1.0, 0, 1], [0, 1, 1]])
    >>> Y = np.array([[1.0, 0], [0, 1], [1, 1]])
    >>> float(cr_expected_error(X, Y, 1))
    6.0
    >>> round(float(cr_expected_error(X, Y, 2, probabilities="uniform")), 12)
    4.0
    >>> float(cr_expected_error(X, Y, 2, method="topk"))  # ‖x_1 y_1ᵀ‖² is left out
    1.0
    >>> # without replacement: index 2 is certain, 0 or 1 joins it with weight 2; both
    >>> # samples miss by ‖x_0 y_0ᵀ − x_1 y_1ᵀ‖² = 2, so the estimate has no spread
    >>> est, se = cr_expected_error(X, Y, 2, replace=False, return_std=True, rng=0)
    >>> float(est), float(se)
    (2.0, 0.0)
    """
    if is_dask_array(a) or is_dask_array(b):
        from ._dask import _cr as _dask_cr

        return _dask_cr.cr_expected_error(
            a, b, rank, method=method, probabilities=probabilities, replace=replace,
            rescale=rescale, norms=norms, samples=samples, return_std=return_std, rng=rng, xp=xp)
    refuse_traced("cr_expected_error", "the power-of-two scaling of the norms (a Python "
                  "int exponent)", a, b)
    xp, a, b, _ = _checks.inputs(a, b, xp)
    plan = _checks.plan(rank, method, probabilities, replace, rescale, a, xp)
    samples = _validation.check_int(samples, "samples", low=1)
    return_std = _validation.check_bool(return_std, "return_std")
    check_rng(rng, xp, _compat.device(a))  # refused even where the exact formula needs no draws
    na, nb, ea, eb = _checks.scaled_norms(a, b, norms, needed=True, check_finite=True, xp=xp)
    if not isinstance(plan.probabilities, str):
        _checks.check_support(plan.probabilities, na, nb, xp)
    # all work on a·2^-ea and b·2^-eb (entries <= 1), squared errors scaled back once
    a_s, b_s = _scale.scale_pow2(a, ea, xp), _scale.scale_pow2(b, eb, xp)
    if plan.method == "sample" and plan.replace and plan.rescale == "none":
        err = _agn.expected_error(a_s, b_s, na, nb, plan.rank, plan.probabilities, xp)
        std = xp.zeros_like(err)
    else:
        rand = Random(rng, xp, _compat.device(a))
        err, std = _by_selection(a_s, b_s, na, nb, plan, rand, samples, xp)
    err, std = _scale.unscale_squared(err, ea + eb, xp), _scale.unscale_squared(std, ea + eb, xp)
    return (err, std) if return_std else err


def _by_selection(
    a: Any, b: Any, na: Any, nb: Any, plan: Any, rand: Any, samples: int, xp: Any
) -> tuple[Any, Any]:
    """Exact (top-k) or Monte Carlo (random) errors, per matrix of the batch."""  # numpydoc ignore=PR01,RT01
    batch, problems = _agn._problems(a, b, na, nb, plan, xp)
    values = [_one(prob, plan, rand, samples, xp) for prob in problems]
    dev = _compat.device(a)
    shape = tuple(batch)
    err = xp.asarray([v[0] for v in values], dtype=xp.float64, device=dev)
    std = xp.asarray([v[1] for v in values], dtype=xp.float64, device=dev)
    if not values:
        return xp.zeros(shape, dtype=xp.float64, device=dev), xp.zeros(
            shape, dtype=xp.float64, device=dev
        )
    return xp.reshape(err, shape), xp.reshape(std, shape)


def _one(prob: tuple, plan: Any, rand: Any, samples: int, xp: Any) -> tuple[float, float]:
    """(error, standard error) of one 2-D problem."""  # numpydoc ignore=PR01,RT01
    a, b, w, p = prob
    if a.shape[1] == 0 or a.shape[0] == 0 or b.shape[1] == 0:
        return 0.0, 0.0  # a @ b is an empty or exactly zero product: nothing to miss
    if plan.method == "auto":
        plan = plan._replace(method=_err.choose_method(a, b, w, p, plan.rank, rand, xp))
    pricer = _err.pricer(a, b, xp)

    def draw() -> tuple[Any, Any]:
        return _agn._select(a, b, w, p, plan, rand, xp, True)

    if plan.method == "topk":  # deterministic: one selection is the whole distribution
        return _err.price(pricer, *draw(), xp), 0.0
    return _err.estimate(pricer, draw, samples, xp)  # standard error inf for one sample
