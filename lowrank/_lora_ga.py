"""LoRA-GA initialisation from the SVD of an estimated gradient (docs/theory/lora_ga.md)."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

from ._agnostic import _lora_ga as _agnostic
from ._lib import _compat, _validation
from ._lib._random import Random
from ._lib._traced import refuse_traced
from ._lib._typing import Array

__all__ = ["LoraFactors", "LoraGAInfo", "lora_ga_init"]

_DIRECTIONS = ("ArB2r", "A2rBr", "ArBr", "random")
_SCALES = {
    "stable": "stable",
    "gd_scale": "gd_scale",
    "unit": "unit",
    "weight_svd": "weight_svd",
    "gd": "gd_scale",
    "weightS": "weight_svd",
}  # official-code names as aliases
# A relative gap below 0.1 % between consecutive singular values makes the split
# of the singular vectors at that index numerically arbitrary.
_FLAT_GAP = 1.0 + 1e-3


class LoraFactors(NamedTuple):
    """LoRA factors in PEFT layout: the adapter adds ``scaling * B @ A``.

    Attributes
    ----------
    A : array of shape (..., rank, in)
        ``lora_A`` weight (the right factor).
    B : array of shape (..., out, rank)
        ``lora_B`` weight (the left factor).
    """

    A: Array
    B: Array


class LoraGAInfo(NamedTuple):
    """Spectral diagnostics of a LoRA-GA initialisation.

    Attributes
    ----------
    S : array of shape (..., min(2 rank + 1, out, in))
        Leading singular values of the gradient (float, the work dtype).
    gap_r : array of shape (...)
        ``σ_r / σ_{r+1}`` (1-based): separation of the A and B halves.
    gap_2r : array of shape (...)
        ``σ_2r / σ_{2r+1}``: separation of the top-2r block from the rest; ``inf``
        when ``2 rank == min(out, in)``. Values near 1 mean a flat spectrum, where
        the singular vectors LoRA-GA uses are ill-determined. Singular values below
        ``max(out, in) * eps * σ_1`` count as zero; a gap between two zeros is nan
        (the gradient's rank is below that index, the vectors there are arbitrary).
    """

    S: Array
    gap_r: Array
    gap_2r: Array


def lora_ga_init(
    grad: Array,
    /,
    rank: int,
    *,
    scaling: float,
    direction: str = "ArB2r",
    scale: str = "stable",
    stable_gamma: float = 16.0,
    compat: str = "peft",
    svd: str = "randomized",
    n_oversamples: int | None = None,
    n_power_iter: int | None = None,
    weight: Array | None = None,
    norm_clip: bool = False,
    return_info: bool = False,
    check_finite: bool = True,
    rng: Any = None,
    xp: Any = None,
) -> LoraFactors | tuple[LoraFactors, LoraGAInfo]:
    """LoRA-GA factors ``(A0, B0)`` from the SVD of an estimated gradient.

    With ``G = U diag(S) Vh``, ``A0`` takes rows of ``Vh`` and ``B0`` columns of ``U``
    so that the first SGD step of the LoRA adapter ``W + scaling * B @ A`` moves the
    weight along the best rank-``2 rank`` approximation of ``G`` (LoRA-GA [1]_).
    The default, ``compat="peft"``, reproduces PEFT 0.21's LoRA-GA; ``compat="paper"``
    the official code (the derivation's scaling, 10³-10⁵x larger offsets).
    The caller subtracts the offset: ``W_res = W - scaling * B0 @ A0`` (the
    ``lowrank.torch.lora_ga_init_`` utility does it for PEFT models).

    Parameters
    ----------
    grad : array of shape (..., out, in)
        Estimated gradient ``∂L/∂W`` of one weight, or a stack of equal-shape
        gradients (one call for all layers of one shape).
    rank : int
        LoRA rank r, ``1 <= rank <= min(out, in) // 2`` (2r triplets are needed).
    scaling : float
        The adapter's scaling ``s`` (``alpha / r``, or ``alpha / sqrt(r)`` for rsLoRA).
    direction : {"ArB2r", "A2rBr", "ArBr", "random"}, default: "ArB2r"
        Which singular indices go to A and to B. ``"random"`` draws a
        seeded permutation per matrix.
    scale : {"stable", "gd_scale", "unit", "weight_svd"}, default: "stable"
        Factor scale. The official names ``"gd"`` and ``"weightS"`` are
        accepted as aliases. ``"weight_svd"`` needs `weight`.
    stable_gamma : float, default: 16.0
        The γ of the stable scale ``ζ = out**0.25 / sqrt(γ)``.
    compat : {"peft", "paper"}, default: "peft"
        ``"peft"``: PEFT 0.21's formulas (B0 carries the singular values, the stable
        scale multiplies B0 only, "random" shares one index set); its offsets are
        tiny and it trains at the learning rates PEFT's LoRA-GA does.
        ``"paper"``: official-code semantics (orthonormal factors times ζ): the first
        step follows ``G_2r`` at full size, so use a learning rate 3-10x below
        vanilla LoRA's (a sweep on all-MiniLM-L6-v2 collapsed to chance at 1e-3 with
        ``"stable"``, not with ``"gd_scale"``; see the LoRA-GA theory page).
    svd : {"randomized", "exact"}, default: "randomized"
        How the leading ``2 rank + 1`` triplets are computed.
    n_oversamples, n_power_iter : int, optional
        Randomized SVD (block Krylov). Default: blocks of ``max(16, rank)`` columns and
        depth ``n_power_iter`` = 4 if that is at least ``2 rank`` wide, else 6 (narrow,
        deep Krylov spaces resolve the singular vectors near index 2r best per
        product). Given ``n_oversamples``, blocks are ``2 rank + n_oversamples`` wide.
        The defaults make the least accurate block LoRA-GA uses, singular vectors
        ``r .. 2r-1``, accurate: largest principal-angle sine 3e-4 to 1.5e-3 on
        384- to 11008-wide float32 gradients with a 1/i spectrum at r = 8 and 32
        (PEFT's ``svd_lowrank(q=4r, niter=4)``: 1e-3 to 6.5e-3).
    weight : array of shape (..., out, in), optional
        The base weight, for ``scale="weight_svd"`` and `norm_clip` only.
    norm_clip : bool, default: False
        The official code's ``norm_clip`` (needs `weight`): where the offset
        ``scaling * B0 @ A0`` has a larger largest entry than the weight, i.e.
        ``ratio = max|W| / max|offset| < 1``, both factors are multiplied by
        ``sqrt(ratio)``, so the offset shrinks by ``ratio``. Costs one
        ``out x in`` product per matrix.
    return_info : bool, default: False
        Also return a `LoraGAInfo` with the spectral gaps.
    check_finite : bool, default: True
        Raise ``ValueError`` if `grad` (or `weight`) holds NaN or Inf.
    rng : None, int or Generator, optional
        Seed or generator for the randomized SVD and for ``direction="random"``.
    xp : array_namespace, optional
        The standard-compatible namespace for `grad`. Default: infer.

    Returns
    -------
    LoraFactors or tuple of (LoraFactors, LoraGAInfo)
        ``A`` of shape (..., rank, in) and ``B`` of shape (..., out, rank), in the
        dtype, namespace and device of `grad`.

    Raises
    ------
    TypeError
        If `grad` is not a real floating/integer array or an option has a wrong type.
    ValueError
        If `grad` is not (..., out, in), ``2 rank > min(out, in)``, an option string is
        unknown, `weight` is missing or misshaped, or the input holds NaN/Inf.

    Warns
    -----
    UserWarning
        If a gradient is exactly zero (the factors are then arbitrary orthonormal
        ones), or its spectrum is flat at index r or 2r (gap below 1.001).

    Notes
    -----
    ``compat="paper"``: ``A0 = ζ Vh[J_A]``, ``B0 = ζ U[:, J_B]``, so ``A0 A0ᵀ = ζ² I``,
    ``B0ᵀ B0 = ζ² I`` and the first SGD step is ``-η s² ζ² G_2r``. Default
    (``"peft"``): ``A0 = Vh[J_A]``, ``B0 = ζ U[:, J_B] diag(S[J_B])``, so
    ``A0 A0ᵀ = I`` and ``B0`` is as small as the gradient's singular values.

    References
    ----------
    .. [1] S. Wang, L. Yu, J. Li, "LoRA-GA: Low-Rank Adaptation with Gradient
       Approximation", arXiv:2407.05000 (2024); J. Su, https://kexue.fm/archives/10226.

    Examples
    --------
    >>> import numpy as np
    >>> import lowrank
    >>> G = np.random.default_rng(0).standard_normal((64, 48))
    >>> A, B = lowrank.lora_ga_init(G, 4, scaling=2.0, rng=0)  # PEFT's LoRA-GA
    >>> A.shape, B.shape
    ((4, 48), (64, 4))
    >>> A, B = lowrank.lora_ga_init(G, 4, scaling=2.0, scale="unit", compat="paper", rng=0)
    >>> bool(np.allclose(A @ A.T, np.eye(4)) and np.allclose(B.T @ B, np.eye(4)))
    True
    """
    refuse_traced("lora_ga_init", "the gradient SVD's value-dependent branches and the "
                  "zero-gradient and flat-spectrum warnings", grad, weight)
    xp = _validation.namespace(grad, weight, xp=xp, names=("grad", "weight"))
    factor_opts = (rank, scaling, direction, scale, stable_gamma, compat)
    plan, svd_opts = _check_options(grad, factor_opts, (svd, n_oversamples, n_power_iter))
    work, out_dtype = _prepare(grad, "grad", check_finite, xp)
    norm_clip = _validation.check_bool(norm_clip, "norm_clip")
    return_info = _validation.check_bool(return_info, "return_info")
    wwork = _check_weight(weight, plan, grad, check_finite, xp, norm_clip)
    rand = Random(rng, xp, _compat.device(grad))
    k = min(2 * plan.rank + 1, *grad.shape[-2:])
    U, S, Vh = _agnostic.top_triplets(work, k, rand=rand, xp=xp, **svd_opts)
    rtol = max(grad.shape[-2:]) * float(xp.finfo(work.dtype).eps)
    gaps = _agnostic.spectral_gaps(S, plan.rank, rtol, xp)
    _warn_spectrum(S, gaps, xp)
    wscale = None if plan.scale != "weight_svd" else _weight_scale(wwork, plan, rand, svd_opts, xp)
    perm = _permutations(rand, grad.shape[:-2], plan.rank, xp) if direction == "random" else None
    A, B = _agnostic.lora_ga_factors(U, S, Vh, plan, perm, wscale, xp)
    if norm_clip:
        A, B = _agnostic.clip_to_weight(A, B, wwork, plan.scaling, xp)
    factors = LoraFactors(xp.astype(A, out_dtype), xp.astype(B, out_dtype))
    return (factors, LoraGAInfo(S, *gaps)) if return_info else factors


def _check_options(grad: Any, factor_opts: tuple[Any, ...], svd_opts: tuple[Any, ...]) -> Any:
    """Validate every option; return the factor plan and the SVD keyword options."""  # numpydoc ignore=PR01,RT01
    rank, scaling, direction, scale, gamma, compat = factor_opts
    svd, over, power = svd_opts
    _validation.check_matrix(grad, "grad", min_ndim=2)
    out, inn = grad.shape[-2:]
    rank = _validation.check_int(
        rank, "rank", low=1, high=min(out, inn) // 2, high_name="min(out, in) // 2"
    )
    plan = _agnostic.FactorPlan(
        rank=rank,
        scaling=_validation.check_positive(scaling, "scaling"),
        direction=_validation.check_option(direction, "direction", _DIRECTIONS),
        scale=_SCALES[_validation.check_option(scale, "scale", _SCALES)],
        stable_gamma=_validation.check_positive(gamma, "stable_gamma"),
        compat=_validation.check_option(compat, "compat", ("paper", "peft")),
    )
    svd = _validation.check_option(svd, "svd", ("randomized", "exact"))
    if over is not None:
        over = _validation.check_int(over, "n_oversamples", low=0)
    if power is not None:
        power = _validation.check_int(power, "n_power_iter", low=0)
    block, depth = _agnostic.svd_defaults(rank, over, power)
    return plan, {"svd": svd, "block": block, "depth": depth}


def _prepare(a: Any, name: str, check_finite: bool, xp: Any) -> tuple[Any, Any]:
    """Real floating work copy of ``a`` (fp16/bf16 computed in float32) and out dtype."""  # numpydoc ignore=PR01,RT01
    if xp.isdtype(a.dtype, "complex floating"):
        msg = f"`{name}` must be real; got dtype {a.dtype}"
        raise TypeError(msg)
    work, out_dtype = _validation.to_floating(a, name, xp)
    # One reduction instead of an elementwise pass: NaN/Inf anywhere make the sum
    # non-finite; only then (or on overflow) is the exact check needed.
    if check_finite and not bool(xp.isfinite(xp.sum(work))):
        _validation.check_finite(work, name, xp)
    return work, out_dtype


def _check_weight(
    weight: Any, plan: Any, grad: Any, check_finite: bool, xp: Any, norm_clip: bool
) -> Any:
    """The validated work copy of ``weight`` for weight_svd / norm_clip (else None)."""  # numpydoc ignore=PR01,RT01
    users = [u for u, on in (("scale='weight_svd'", plan.scale == "weight_svd"),
                             ("norm_clip=True", norm_clip)) if on]
    if not users:
        if weight is not None:
            msg = (
                "`weight` is used only with scale='weight_svd' or norm_clip=True; got "
                f"scale={plan.scale!r}, norm_clip=False"
            )
            raise ValueError(msg)
        return None
    if weight is None:
        msg = f"{users[0]} needs the base weight: pass `weight=` (same shape as grad)"
        raise ValueError(msg)
    if tuple(weight.shape) != tuple(grad.shape):
        msg = f"`weight` must have the shape of grad {tuple(grad.shape)}; got {tuple(weight.shape)}"
        raise ValueError(msg)
    return _prepare(weight, "weight", check_finite, xp)[0]


def _weight_scale(w: Any, plan: Any, rand: Any, svd_opts: dict[str, Any], xp: Any) -> Any:
    """Weight-SVD scale factor per matrix from the top singular values of W."""  # numpydoc ignore=PR01,RT01
    k = 1 if plan.compat == "peft" else plan.rank
    _, sw, _ = _agnostic.top_triplets(w, k, rand=rand, xp=xp, **svd_opts)
    return _agnostic.weight_scale(sw, plan, xp)


def _permutations(rand: Random, batch: tuple[int, ...], rank: int, xp: Any) -> Any:
    """One seeded permutation of 0..2r-1 per matrix, shape (*batch, 2r)."""  # numpydoc ignore=PR01,RT01
    return xp.argsort(rand.uniform((*batch, 2 * rank), xp.float64), axis=-1)


def _warn_spectrum(S: Any, gaps: tuple[Any, Any], xp: Any) -> None:
    """Warn about zero gradients and flat spectra at the block boundaries."""  # numpydoc ignore=PR01
    zero = S[..., 0] == 0
    n_zero = int(xp.sum(xp.astype(zero, xp.int64)))
    if n_zero:
        msg = (
            f"{n_zero} gradient(s) are exactly zero: LoRA-GA has no direction to follow "
            "and returns arbitrary orthonormal factors"
        )
        warnings.warn(msg, UserWarning, stacklevel=3)
    for name, gap in zip(("σ_r/σ_{r+1}", "σ_2r/σ_{2r+1}"), gaps, strict=True):
        flat = xp.logical_and(gap < _FLAT_GAP, xp.logical_not(zero))
        n_flat = int(xp.sum(xp.astype(flat, xp.int64)))
        if n_flat:
            smallest = float(xp.min(xp.where(flat, gap, xp.full_like(gap, xp.inf))))
            msg = (
                f"flat gradient spectrum in {n_flat} matrix(es): {name} = {smallest:.6g} "
                f"< {_FLAT_GAP}; the LoRA-GA singular vectors there are ill-determined"
            )
            warnings.warn(msg, UserWarning, stacklevel=3)
