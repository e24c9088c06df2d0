"""Input checks and kernel glue for the CR public functions (lowrank._cr)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._agnostic import _cr as _agn
from ._agnostic import _cr_scale as _scale
from ._lib import _compat, _validation
from ._lib._dispatch import get_kernel

__all__ = ["gather_op", "inputs", "norms_for", "plan", "probabilities_array"]


def inputs(a: Any, b: Any, xp: Any) -> tuple[Any, Any, Any, Any]:
    """(xp, a, b, out_dtype): real floating, common dtype, inner dims and batch checked."""  # numpydoc ignore=PR01,RT01
    xp = _validation.namespace(a, b, xp=xp, names=("a", "b"))
    _validation.check_matrix(a, "a")
    _validation.check_matrix(b, "b")
    a, out_a = _validation.to_floating(a, "a", xp)
    b, out_b = _validation.to_floating(b, "b", xp)
    for name, arr in (("a", a), ("b", b)):
        if xp.isdtype(arr.dtype, "complex floating"):
            msg = (
                f"`{name}` must be real (CR sampling is defined for real matrices); got {arr.dtype}"
            )
            raise TypeError(msg)
    if a.shape[-1] != b.shape[-2]:
        msg = (
            f"inner dimensions differ: `a` has shape {tuple(a.shape)} (l = {a.shape[-1]}) "
            f"but `b` has shape {tuple(b.shape)} (l = {b.shape[-2]})"
        )
        raise ValueError(msg)
    work = xp.result_type(a.dtype, b.dtype)
    a, b = xp.astype(a, work, copy=False), xp.astype(b, work, copy=False)
    if a.ndim > 2 or b.ndim > 2:
        batch = _batch_shape(a.shape[:-2], b.shape[:-2])
        a = xp.broadcast_to(a, (*batch, *a.shape[-2:]))
        b = xp.broadcast_to(b, (*batch, *b.shape[-2:]))
    return xp, a, b, xp.result_type(out_a, out_b)


def _batch_shape(sa: tuple[int, ...], sb: tuple[int, ...]) -> tuple[int, ...]:
    """Broadcast two batch shapes (NumPy rules) or raise ValueError."""  # numpydoc ignore=PR01,RT01
    n = max(len(sa), len(sb))
    sa, sb = (1,) * (n - len(sa)) + tuple(sa), (1,) * (n - len(sb)) + tuple(sb)
    if any(x != y and 1 not in (x, y) for x, y in zip(sa, sb, strict=True)):
        msg = f"batch shapes of `a` {sa} and `b` {sb} do not broadcast"
        raise ValueError(msg)
    return tuple(max(x, y) for x, y in zip(sa, sb, strict=True))


def plan(
    rank: Any, method: Any, probabilities: Any, replace: Any, rescale: Any, a: Any, xp: Any
) -> _agn.CRPlan:
    """Checked options as a CRPlan; user probabilities become float64 (..., l)."""  # numpydoc ignore=PR01,RT01
    rank = _validation.check_int(rank, "rank", low=1)
    method = _validation.check_option(method, "method", ("sample", "topk", "auto"))
    rescale = _validation.check_option(rescale, "rescale", ("none", "diagonal"))
    if not isinstance(replace, bool):
        msg = f"`replace` must be a bool; got {replace!r}"
        raise TypeError(msg)
    if isinstance(probabilities, str):
        probabilities = _validation.check_option(
            probabilities, "probabilities", ("optimal", "uniform")
        )
    else:
        probabilities = probabilities_array(probabilities, a, xp)
    if method == "topk" and not (isinstance(probabilities, str) and probabilities == "optimal"):
        msg = "`probabilities` applies to method='sample' only; method='topk' ranks ‖a_i‖·‖b_i‖"
        raise ValueError(msg)
    return _agn.CRPlan(rank, method, probabilities, replace, rescale)


def probabilities_array(p: Any, a: Any, xp: Any) -> Any:
    """Check a user probability vector (shape, sign, sum) and return it as float64 (..., l)."""  # numpydoc ignore=PR01,RT01
    _validation.namespace(a, p, names=("a", "probabilities"))
    _validation.check_matrix(p, "probabilities", min_ndim=1)
    inner, batch = a.shape[-1], tuple(a.shape[:-2])
    if p.shape[-1] != inner or (p.ndim > 1 and tuple(p.shape[:-1]) != batch):
        msg = (
            f"`probabilities` must have shape ({inner},) or {(*batch, inner)}; got {tuple(p.shape)}"
        )
        raise ValueError(msg)
    p, _ = _validation.to_floating(p, "probabilities", xp)
    eps = float(xp.finfo(p.dtype).eps)
    p = xp.astype(p, xp.float64)
    if not bool(xp.all(xp.isfinite(p))) or bool(xp.any(p < 0)):
        low = float(xp.min(p)) if inner else 0.0
        msg = f"`probabilities` must be finite and >= 0; got min {low}"
        raise ValueError(msg)
    sums = xp.sum(p, axis=-1)
    worst = float(xp.max(xp.abs(sums - 1.0))) if inner else 0.0
    if worst > max(math.sqrt(eps), inner * eps):
        msg = f"`probabilities` must sum to 1 over the last axis; off by {worst:.3g}"
        raise ValueError(msg)
    return xp.broadcast_to(p, (*batch, inner))


def _check_norm_arg(x: Any, name: str, a: Any, xp: Any) -> Any:
    """A user norm vector: shape (l,) or (..., l), finite, >= 0; broadcast to (..., l)."""  # numpydoc ignore=PR01,RT01
    _validation.namespace(a, x, names=("a", name))
    _validation.check_matrix(x, name, min_ndim=1)
    inner, batch = a.shape[-1], tuple(a.shape[:-2])
    if x.shape[-1] != inner or (x.ndim > 1 and tuple(x.shape[:-1]) != batch):
        msg = f"`{name}` must have shape ({inner},) or {(*batch, inner)}; got {tuple(x.shape)}"
        raise ValueError(msg)
    if _compat.size(x) and bool(xp.any(x < 0)):
        msg = f"`{name}` must be >= 0 (they are norms); got min {float(xp.min(x))}"
        raise ValueError(msg)
    return xp.broadcast_to(xp.astype(x, a.dtype), (*batch, inner))


def _norms_op(xp: Any) -> Any:
    """Fused norm pass: the numba/numba-cuda kernel for 2-D inputs, else array API."""  # numpydoc ignore=PR01,RT01
    kernel = get_kernel("cr_norms", xp)

    def run(a: Any, b: Any, need_a: bool, need_b: bool) -> tuple[Any, Any]:
        if kernel is None or a.ndim != 2:
            na, nb = _agn.norms(a if need_a else a[..., :0, :], b if need_b else b[..., :, :0], xp)
            return (na if need_a else None), (nb if need_b else None)
        dev = _compat.device(a)
        na = xp.empty((a.shape[1],), dtype=a.dtype, device=dev) if need_a else None
        nb = xp.empty((b.shape[0],), dtype=b.dtype, device=dev) if need_b else None
        kernel(a if need_a else None, b if need_b else None, na, nb)
        return na, nb

    return run


def gather_op(xp: Any) -> Any:
    """Fused gather-and-scale: the kernel (2-D, C/F layouts) or the array-API twin."""  # numpydoc ignore=PR01,RT01
    kernel = get_kernel("cr_gather_scale", xp)
    if kernel is None:
        return lambda a, b, idx, col, row: _agn.gather_scale(a, b, idx, col, row, xp)

    def run(a: Any, b: Any, idx: Any, col: Any, row: Any) -> tuple[Any, Any]:
        dev = _compat.device(a)
        C = xp.empty((a.shape[0], idx.shape[0]), dtype=a.dtype, device=dev)
        R = xp.empty((idx.shape[0], b.shape[1]), dtype=b.dtype, device=dev)
        kernel(a, b, idx, col, row, C, R)
        return C, R

    return run


def norms_for(
    a: Any, b: Any, norms: Any, *, needed: bool, check_finite: bool, xp: Any
) -> tuple[Any, Any]:
    """Norms (given or from one fused pass), NaN/Inf checked through them when asked."""  # numpydoc ignore=PR01,RT01
    check_finite = _validation.check_bool(check_finite, "check_finite")
    if norms is not None and (not isinstance(norms, tuple) or len(norms) != 2):
        msg = (
            f"`norms` must be a CRNorms / (columns, rows) pair or None; got {type(norms).__name__}"
        )
        raise TypeError(msg)
    if not needed:  # uniform sampling reads no norms; check the inputs directly
        if check_finite:
            _validation.check_finite(a, "a", xp)
            _validation.check_finite(b, "b", xp)
        return None, None
    na, nb = norms if norms is not None else (None, None)
    na = None if na is None else _check_norm_arg(na, "norms.columns", a, xp)
    nb = None if nb is None else _check_norm_arg(nb, "norms.rows", a, xp)
    if na is None or nb is None:
        ca, cb = _norms_op(xp)(a, b, na is None, nb is None)
        na, nb = (ca if na is None else na), (cb if nb is None else nb)
    if check_finite:  # a NaN/Inf entry makes its column (row) norm NaN/Inf: no extra pass
        for name, x in (("a", na), ("b", nb)):
            if not bool(xp.all(xp.isfinite(x))):
                msg = (
                    f"`{name}` contains NaN or Inf (seen in its norms; or its norms "
                    "overflow); pass check_finite=False to skip this check"
                )
                raise ValueError(msg)
    return na, nb


def scaled_norms(
    a: Any, b: Any, norms: Any, *, needed: bool, check_finite: bool, xp: Any
) -> tuple[Any, Any, int, int]:
    """(na, nb, ea, eb): norms of ``a * 2**-ea`` and ``b * 2**-eb``, largest in [0.5, 1).

    Products and squares of these norms can neither overflow nor underflow, so weights,
    probabilities and error formulas are the same at every scale of the inputs. A norm
    pass whose squares over- or underflowed (entries beyond ~1e154 or below ~1e-139 in
    float64, ~1e19 / 1e-13 in float32) is redone once on the scaled input.
    """  # numpydoc ignore=PR01,RT01
    check_finite = _validation.check_bool(check_finite, "check_finite")
    with np.errstate(over="ignore", under="ignore"):  # detected below, then redone scaled
        na, nb = norms_for(a, b, norms, needed=needed, check_finite=False, xp=xp)
    if na is None:
        if check_finite:
            _validation.check_finite(a, "a", xp)
            _validation.check_finite(b, "b", xp)
        return None, None, 0, 0
    given = (None, None) if norms is None else norms
    na, ea = _scaled(a, b, na, 0, given[0] is not None, check_finite, xp)
    nb, eb = _scaled(a, b, nb, 1, given[1] is not None, check_finite, xp)
    return na, nb, ea, eb


def _scaled(a: Any, b: Any, nx: Any, side: int, given: bool, check: bool, xp: Any) -> Any:
    """One side (0: columns of a, 1: rows of b) of :func:`scaled_norms`."""  # numpydoc ignore=PR01,RT01
    x, name = (a, "a") if side == 0 else (b, "b")
    top = float(xp.max(nx)) if _compat.size(nx) else 0.0
    if not given and _compat.size(x) and _scale.needs_rescan(top, x.dtype, xp):
        peak = float(xp.max(xp.abs(x)))
        if not math.isfinite(peak):
            if check:
                msg = (
                    f"`{name}` contains NaN or Inf (seen in its norms); pass "
                    "check_finite=False to skip this check"
                )
                raise ValueError(msg)
            return nx, 0
        e = _scale.exponent_of(peak)
        xs = _scale.scale_pow2(x, e, xp)
        pair = (xs, b) if side == 0 else (a, xs)
        return _norms_op(xp)(*pair, side == 0, side == 1)[side], e
    if check and not math.isfinite(top):
        msg = f"`norms` given for `{name}` contain NaN or Inf"
        raise ValueError(msg)
    e = _scale.exponent_of(top)
    return _scale.scale_pow2(nx, e, xp), e


def check_support(p: Any, na: Any, nb: Any, xp: Any) -> None:
    """ValueError if p_i = 0 where ‖a_i‖·‖b_i‖ > 0: the estimator would be biased."""  # numpydoc ignore=PR01
    w = xp.astype(na, xp.float64) * xp.astype(nb, xp.float64)
    bad = xp.reshape((p == 0) & (w > 0), (-1,))
    if _compat.size(bad) and bool(xp.any(bad)):
        first = int(xp.argmax(xp.astype(bad, xp.int8))) % p.shape[-1]
        msg = (
            f"`probabilities` is 0 at index {first} where ‖a_i‖·‖b_i‖ > 0; the estimate "
            "would be biased. Give every nonzero outer product p_i > 0"
        )
        raise ValueError(msg)
