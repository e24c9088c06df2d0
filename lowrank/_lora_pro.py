"""LoRA-Pro gradient alignment: adjusted LoRA gradients and the equivalent gradient."""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any, NamedTuple

from ._agnostic import _lora_pro as _ag
from ._lib._compat import device, size
from ._lib._traced import is_traced
from ._lib._typing import Array, ArrayNamespace
from ._lib._validation import check_finite as _check_finite
from ._lib._validation import (
    check_matrix,
    check_option,
    check_positive,
    namespace,
    to_floating,
)

__all__ = ["LoraGrads", "equivalent_gradient", "lora_pro_adjust"]

_GAUGES = ("sylvester", "zero", "symmetric")
_NAMES = ("A", "B", "grad_A", "grad_B")
# lora_pro_adjust needs 1/s² (the adjusted gradients scale as 1/s, the inputs as s):
# s² must stay a normal float64, which bounds s to about [1.5e-154, 1.3e154].
_SQUARE_RANGE = (math.sqrt(sys.float_info.min), math.sqrt(sys.float_info.max))


class LoraGrads(NamedTuple):
    """Gradients of one LoRA adapter (or a batch of them) in PEFT layout.

    Attributes
    ----------
    grad_A : array of shape (..., r, in)
        Gradient for ``lora_A``.
    grad_B : array of shape (..., out, r)
        Gradient for ``lora_B``.
    """

    grad_A: Array  # noqa: N815 - PyTorch-style field names
    grad_B: Array  # noqa: N815


def lora_pro_adjust(
    A: Array,
    B: Array,
    grad_A: Array,
    grad_B: Array,
    /,
    *,
    scaling: float | Array,
    gauge: str = "sylvester",
    damping: str | float | None = "auto",
    check_finite: bool = True,
    xp: ArrayNamespace | None = None,
) -> LoraGrads:
    r"""LoRA-Pro adjusted gradients: the LoRA step that best matches full fine-tuning.

    Returns ``(grad_A', grad_B')`` such that the equivalent gradient
    ``scaling * (B @ grad_A' + grad_B' @ A)`` is the orthogonal projection of the full
    gradient ``G`` onto the tangent space ``{B Y + Z A}`` of the LoRA manifold, computed
    from the LoRA gradients ``grad_A = s Bᵀ G`` and ``grad_B = s G Aᵀ`` alone.

    Parameters
    ----------
    A : array of shape (..., r, in)
        ``lora_A`` weights (right factor). Leading axes batch independent layers.
    B : array of shape (..., out, r)
        ``lora_B`` weights (left factor).
    grad_A : array of shape (..., r, in)
        Gradient of the loss with respect to ``A``.
    grad_B : array of shape (..., out, r)
        Gradient of the loss with respect to ``B``.
    scaling : float or array of shape (...)
        Adapter scaling ``s`` (``alpha / r``, or ``alpha / sqrt(r)`` under rsLoRA), > 0;
        an array gives one scaling per batched layer. The result involves ``1/s²``,
        so ``s²`` must be a normal float64: about ``1.5e-154 <= s <= 1.3e154``.
    gauge : {"sylvester", "zero", "symmetric"}, default "sylvester"
        How the (gauge-independent) equivalent gradient is split between the factors:
        ``"sylvester"`` changes the raw gradients least (LoRA-Pro), ``"zero"`` is the
        official code's base solution, ``"symmetric"`` Su's symmetric split.
    damping : "auto", float or None, default "auto"
        Regularisation of the r×r inverses. ``"auto"``: scale-aware ridge
        ``eps·tr(S)/r + floor`` (eps of the input dtype) and a cut-off that treats a
        direction of ``B`` as null when ``σ_i(B) < 1e-3 · rms σ(A)`` (and vice versa);
        see Notes. A float ``δ > 0``: absolute ridge ``(S + δ I)⁻¹``, as the reference
        code (δ = 1e-8). ``0`` or None: exact pseudo-inverse.
    check_finite : bool, default True
        Raise ``ValueError`` on NaN or Inf in any input.
    xp : array_namespace, optional
        The standard-compatible namespace for the inputs. Default: infer.

    Returns
    -------
    LoraGrads
        ``(grad_A, grad_B)`` adjusted, same shapes, namespace, device and floating
        dtype as the inputs.

    Raises
    ------
    TypeError
        On non-real inputs, mixed namespaces, or a non-numeric ``scaling``/``damping``.
    ValueError
        On shape mismatches, ``scaling <= 0``, a bad ``gauge``/``damping`` or NaN/Inf.

    See Also
    --------
    equivalent_gradient : The full-size projected gradient.

    Notes
    -----
    With ``S_B = BᵀB``, ``S_A = AAᵀ`` and any r×r matrix ``X``

    .. math::

        g_A' = \tfrac{1}{s^2} S_B^{-1} g_A + X A, \qquad
        g_B' = \tfrac{1}{s^2} (g_B - B S_B^{-1} B^\top g_B) S_A^{-1} - B X .

    The Sylvester gauge solves ``S_B X + X S_A = K`` with two symmetric
    eigendecompositions (one batched ``eigh``). No (out, out) or (in, in) matrix is
    formed; the cost is O((in + out) r² + r³) per layer.

    Damping (``"auto"``): eigen-directions of ``S_B`` with
    ``λ_i <= max(r·eps·λ_max, 1e-6 · tr(S_A)/r)`` are dropped from the pseudo-inverse.
    The equivalent gradient is then exactly the projection onto the tangent space of
    the non-degenerate part ``{B_kept Y + Z A}``, and ``‖grad_A'‖`` stays bounded as
    ``σ_min(B) → 0``. At the standard initialisation ``B = 0`` this gives
    ``grad_A' = 0 (= grad_A)`` and ``grad_B' = grad_B S_A⁻¹ / s²``, the reference
    code's step-0 rule, without special-casing.

    References
    ----------
    .. [1] Z. Wang, J. Liang, R. He, Z. Wang, T. Tan, "LoRA-Pro: Are Low-Rank
       Adapters Properly Optimized?", arXiv:2407.18242.
    .. [2] J. Su, https://kexue.fm/archives/10266

    Examples
    --------
    >>> import numpy as np
    >>> import lowrank
    >>> rng = np.random.default_rng(0)
    >>> A, B = rng.standard_normal((4, 30)), rng.standard_normal((20, 4))
    >>> G = rng.standard_normal((20, 30))
    >>> s = 2.0
    >>> gA, gB = lowrank.lora_pro_adjust(A, B, s * B.T @ G, s * G @ A.T, scaling=s)
    >>> g_eq = s * (B @ gA + gB @ A)
    >>> residual = G - g_eq
    >>> bool(np.allclose(B.T @ residual, 0)), bool(np.allclose(residual @ A.T, 0))
    (True, True)
    """
    xp = namespace(A, B, grad_A, grad_B, xp=xp, names=_NAMES)
    check_option(gauge, "gauge", _GAUGES)
    damping = _check_damping(damping)
    (A, B, gA, gB), out_dtype = _prepare(A, B, grad_A, grad_B, check_finite, xp)
    scale = _check_scaling(scaling, A, xp)
    _check_scaling_range(scale, *_SQUARE_RANGE, "scaling² must be a normal float64", xp)
    if A.shape[-2] == 0 or size(A) + size(B) == 0:
        return LoraGrads(xp.zeros_like(gA, dtype=out_dtype), xp.zeros_like(gB, dtype=out_dtype))
    inv_s2 = 1.0 / (scale * scale)
    gA, gB = _ag.lora_pro_adjust(A, B, gA, gB, inv_s2=inv_s2, gauge=gauge, damping=damping, xp=xp)
    return LoraGrads(xp.astype(gA, out_dtype, copy=False), xp.astype(gB, out_dtype, copy=False))


def equivalent_gradient(
    A: Array,
    B: Array,
    grad_A: Array,
    grad_B: Array,
    /,
    *,
    scaling: float | Array,
    damping: str | float | None = "auto",
    check_finite: bool = True,
    xp: ArrayNamespace | None = None,
) -> Array:
    r"""The LoRA-Pro equivalent gradient ``g̃``, from the LoRA gradients alone.

    ``g̃ = P_B G + G P_A − P_B G P_A`` is the orthogonal projection of the full gradient
    ``G`` onto the tangent space ``{B Y + Z A}``, where ``P_B``/``P_A`` project onto the
    column space of ``B`` and the row space of ``A``. It is the change of
    ``W + s·B A`` per unit learning rate under :func:`lora_pro_adjust` (any gauge).

    Parameters
    ----------
    A : array of shape (..., r, in)
        ``lora_A`` weights.
    B : array of shape (..., out, r)
        ``lora_B`` weights.
    grad_A : array of shape (..., r, in)
        Gradient with respect to ``A`` (``s Bᵀ G``).
    grad_B : array of shape (..., out, r)
        Gradient with respect to ``B`` (``s G Aᵀ``).
    scaling : float or array of shape (...)
        Adapter scaling ``s`` > 0. The gradients are divided by ``s`` first (the
        result is ``s``-free), so any ``s`` that is a normal number of the work dtype
        is accepted.
    damping : "auto", float or None, default "auto"
        As in :func:`lora_pro_adjust`.
    check_finite : bool, default True
        Raise ``ValueError`` on NaN or Inf in any input.
    xp : array_namespace, optional
        The standard-compatible namespace for the inputs. Default: infer.

    Returns
    -------
    array of shape (..., out, in)
        The equivalent gradient, in the inputs' namespace, device and dtype.

    Raises
    ------
    TypeError
        On non-real inputs, mixed namespaces, or a non-numeric ``scaling``/``damping``.
    ValueError
        On shape mismatches, ``scaling <= 0``, a bad ``damping`` or NaN/Inf.

    See Also
    --------
    lora_pro_adjust : The adjusted factor gradients.

    Notes
    -----
    Computed as one product of inner dimension 2r,
    ``s [B, b₀] @ [a₀; A]`` with the base solution ``a₀ = S_B⁻¹ g_A / s²``,
    ``b₀ = (g_B − B S_B⁻¹ Bᵀ g_B) S_A⁻¹ / s²``: O(out·in·r) flops, and the result is the
    only (out, in) array formed.

    Examples
    --------
    >>> import numpy as np
    >>> import lowrank
    >>> rng = np.random.default_rng(0)
    >>> A, B = rng.standard_normal((3, 12)), rng.standard_normal((10, 3))
    >>> G = rng.standard_normal((10, 12))
    >>> g = lowrank.equivalent_gradient(A, B, B.T @ G, G @ A.T, scaling=1.0)
    >>> g.shape, bool(np.isclose(np.sum(g * G), np.sum(g * g)))
    ((10, 12), True)
    """
    xp = namespace(A, B, grad_A, grad_B, xp=xp, names=_NAMES)
    damping = _check_damping(damping)
    (A, B, gA, gB), out_dtype = _prepare(A, B, grad_A, grad_B, check_finite, xp)
    scale = _check_scaling(scaling, A, xp)
    fi = xp.finfo(gA.dtype)
    _check_scaling_range(scale, fi.smallest_normal, fi.max, f"a normal {gA.dtype} number", xp)
    shape = (*A.shape[:-2], B.shape[-2], A.shape[-1])
    if A.shape[-2] == 0 or size(A) + size(B) == 0:
        return xp.zeros(shape, dtype=out_dtype, device=device(A))
    # g~ = s (B a0 + b0 A) with a0, b0 linear in (gA, gB) / s²: the same as s = 1 applied
    # to gA / s and gB / s, which never forms s² (no under/overflow for tiny or huge s).
    s = scale if isinstance(scale, float) else xp.astype(scale, gA.dtype)
    g = _ag.equivalent_gradient(A, B, gA / s, gB / s, scale=1.0, damping=damping, xp=xp)
    return xp.astype(g, out_dtype, copy=False)


def _prepare(A: Any, B: Any, gA: Any, gB: Any, check_finite: bool, xp: Any):
    """Validate shapes and dtypes; return arrays in one work dtype."""  # numpydoc ignore=PR01,RT01
    names = _NAMES
    arrays = (A, B, gA, gB)
    for a, name in zip(arrays, names, strict=True):
        check_matrix(a, name)
    _check_shapes(A, B, gA, gB)
    works, outs = [], []
    for a, name in zip(arrays, names, strict=True):
        if xp.isdtype(a.dtype, "complex floating"):
            msg = f"`{name}` must be real; got dtype {a.dtype}"
            raise TypeError(msg)
        work, out = to_floating(a, name, xp)
        works.append(work)
        outs.append(out)
    dtype = xp.result_type(*[w.dtype for w in works])
    out_dtype = xp.result_type(*outs)
    works = [xp.astype(w, dtype, copy=False) for w in works]
    if check_finite:
        for w, name in zip(works, names, strict=True):
            # w·0 is NaN exactly where w is NaN or ±Inf, and a sum keeps the NaN: one
            # cheap pass instead of a boolean temporary; the exact check names it.
            if size(w) and (is_traced(w) or not bool(xp.isfinite(xp.sum(w * 0)))):
                _check_finite(w, name, xp)
    return works, out_dtype


def _check_shapes(A: Any, B: Any, gA: Any, gB: Any) -> None:
    """Raise ValueError unless A, B and the gradients fit."""  # numpydoc ignore=PR01
    r = A.shape[-2]
    if B.shape[-1] != r:
        msg = f"`B` must have shape (..., out, r) with r = A.shape[-2] = {r}; got {tuple(B.shape)}"
        raise ValueError(msg)
    if tuple(A.shape[:-2]) != tuple(B.shape[:-2]):
        msg = (
            "`A` and `B` must have the same batch shape; got "
            f"{tuple(A.shape[:-2])} and {tuple(B.shape[:-2])}"
        )
        raise ValueError(msg)
    for g, ref, name, ref_name in ((gA, A, "grad_A", "A"), (gB, B, "grad_B", "B")):
        if tuple(g.shape) != tuple(ref.shape):
            want, got = tuple(ref.shape), tuple(g.shape)
            msg = f"`{name}` must have the shape of `{ref_name}`, {want}; got {got}"
            raise ValueError(msg)


def _check_damping(damping: Any) -> Any:
    """Return "auto" or a float >= 0 (None -> 0.0)."""  # numpydoc ignore=PR01,RT01
    if damping is None:
        return 0.0
    if isinstance(damping, str):
        return check_option(damping, "damping", ("auto",))
    if isinstance(damping, numbers.Real) and not isinstance(damping, bool):
        return check_positive(damping, "damping", strict=False)
    msg = f"`damping` must be 'auto', a float >= 0 or None; got {damping!r}"
    raise TypeError(msg)


def _check_scaling(scaling: Any, A: Any, xp: Any) -> Any:
    """Scaling as a float, or an array of shape (..., 1, 1)."""  # numpydoc ignore=PR01,RT01
    if isinstance(scaling, numbers.Real) and not isinstance(scaling, bool):
        return check_positive(scaling, "scaling")
    if not hasattr(scaling, "shape"):
        msg = f"`scaling` must be a positive float or an array; got {scaling!r}"
        raise TypeError(msg)
    batch = tuple(A.shape[:-2])
    if tuple(scaling.shape) not in (batch, ()):
        msg = (
            f"`scaling` must be a float or have the batch shape {batch}; got {tuple(scaling.shape)}"
        )
        raise ValueError(msg)
    s = xp.astype(xp.asarray(scaling), xp.float64)  # range checks and 1/s² in float64
    if not bool(xp.all(s > 0)) or not bool(xp.all(xp.isfinite(s))):
        msg = f"`scaling` must be finite and > 0 for every layer; got min {float(xp.min(s))}"
        raise ValueError(msg)
    return s[..., None, None]


def _check_scaling_range(scale: Any, low: float, high: float, why: str, xp: Any) -> None:
    """Raise ValueError unless every scaling lies in ``[low, high]``."""  # numpydoc ignore=PR01
    lo, hi = (scale, scale) if isinstance(scale, float) else (
        float(xp.min(scale)), float(xp.max(scale)))
    if lo < low or hi > high:
        got = repr(scale) if isinstance(scale, float) else f"values in [{lo:.3g}, {hi:.3g}]"
        msg = f"`scaling` must satisfy {low:.3g} <= scaling <= {high:.3g} ({why}); got {got}"
        raise ValueError(msg)
