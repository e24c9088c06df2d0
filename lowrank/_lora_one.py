"""LoRA-One initialisation: the adapter starts as one preconditioned full-gradient step.

Zhang, Liu and Chen (ICML 2025) take the SVD of the negative gradient,
``-G = U S Vᵀ``, and set ``B0 = U_r S_r^½ / √γ``, ``A0 = S_r^½ V_rᵀ / √γ`` with no base
offset, so the adapted weight starts at ``W + s B0 A0 = W - (s/γ) G_r``: a gradient
step along the best rank-r approximation of the gradient (docs/theory/gradient_sketch.md).
"""

from __future__ import annotations

from typing import Any

from ._agnostic import _lora_ga as _ga
from ._lib import _compat, _validation
from ._lib._random import Random
from ._lib._typing import Array
from ._lora_ga import LoraFactors

__all__ = ["lora_one_factors", "lora_one_init"]


def lora_one_factors(
    U: Array, S: Array, Vh: Array, /, rank: int, *, gamma: float, normalize: bool = False,
    xp: Any = None,
) -> LoraFactors:
    """LoRA-One factors from the gradient's leading singular triplets ``G ≈ U diag(S) Vh``.

    ``B0 = -U_r S_r^½ / c`` and ``A0 = S_r^½ Vh_r / c`` with ``c = √γ`` (times
    ``√σ_1`` with `normalize`), so ``B0 @ A0 = -G_r / c²``: the SVD of ``-G`` has
    the left vectors ``-U``. Only the top `rank` triplets are read.

    Parameters
    ----------
    U : array of shape (..., out, k)
        Left singular vectors of the gradient ``∂L/∂W`` (``k >= rank``).
    S : array of shape (..., k)
        Singular values, non-increasing.
    Vh : array of shape (..., k, in)
        Right singular vectors.
    rank : int
        LoRA rank r, ``1 <= rank <= k``.
    gamma : float
        The paper's γ > 0: the adapter starts at ``W - (s/γ) G_r`` for LoRA scaling s.
    normalize : bool, default: False
        Also divide both factors by ``√σ_1`` (the official code's normalised variant):
        the initial step ``(s/γ) G_r / σ_1`` then has spectral norm ``s/γ`` whatever
        the gradient's scale. A zero gradient gives zero factors either way.
    xp : array_namespace, optional
        Namespace of the arrays. Default: infer.

    Returns
    -------
    LoraFactors
        ``A`` (..., rank, in) and ``B`` (..., out, rank).

    Raises
    ------
    ValueError
        If shapes disagree, `rank` exceeds ``k`` or `gamma` is not positive.
    TypeError
        If `rank` is not an integer or `normalize` not a bool.

    Examples
    --------
    >>> import numpy as np
    >>> import lowrank
    >>> G = np.random.default_rng(0).standard_normal((6, 5))
    >>> U, S, Vh = np.linalg.svd(G, full_matrices=False)
    >>> A, B = lowrank.lora_one_factors(U, S, Vh, 2, gamma=4.0)
    >>> bool(np.allclose(B @ A, -(U[:, :2] * S[:2]) @ Vh[:2] / 4.0))
    True
    """
    xp = _validation.namespace(U, S, Vh, xp=xp, names=("U", "S", "Vh"))
    k = S.shape[-1]
    if U.shape[-1] != k or Vh.shape[-2] != k:
        msg = (f"U (..., out, k), S (..., k), Vh (..., k, in) disagree: {tuple(U.shape)}, "
               f"{tuple(S.shape)}, {tuple(Vh.shape)}")
        raise ValueError(msg)
    rank = _validation.check_int(rank, "rank", low=1, high=k, high_name="number of triplets")
    gamma = _validation.check_positive(gamma, "gamma")
    normalize = _validation.check_bool(normalize, "normalize")
    root = xp.sqrt(S[..., :rank])
    scale = xp.full_like(S[..., :1], gamma**0.5)
    if normalize:
        lead = xp.sqrt(S[..., :1])
        scale = scale * xp.where(lead > 0, lead, xp.ones_like(lead))
    B = -(U[..., :rank] * (root / scale)[..., None, :])
    A = Vh[..., :rank, :] * (root / scale)[..., :, None]
    return LoraFactors(A, B)


def lora_one_init(
    grad: Array, /, rank: int, *, gamma: float, normalize: bool = False,
    svd: str = "randomized", check_finite: bool = True, rng: Any = None, xp: Any = None,
) -> LoraFactors:
    """LoRA-One factors ``(A0, B0)`` from an estimated gradient (no base offset).

    The top `rank` triplets of `grad` are computed (the library's block Krylov SVD
    with LoRA-GA's defaults, or exactly) and passed to `lora_one_factors`. The caller
    does not touch the base weight: the adapted weight starts at ``W - (s/γ) G_r``.

    Parameters
    ----------
    grad : array of shape (..., out, in)
        Estimated gradient ``∂L/∂W`` (or a stack of equal-shape ones).
    rank : int
        LoRA rank r, ``1 <= rank <= min(out, in)``.
    gamma : float
        The paper's γ > 0.
    normalize : bool, default: False
        Divide both factors by ``√σ_1`` too (see `lora_one_factors`).
    svd : {"randomized", "exact"}, default: "randomized"
        How the triplets are computed.
    check_finite : bool, default: True
        Raise ``ValueError`` if `grad` holds NaN or Inf.
    rng : None, int or Generator, optional
        Seed or generator of the randomized SVD.
    xp : array_namespace, optional
        Namespace of `grad`. Default: infer.

    Returns
    -------
    LoraFactors
        ``A`` (..., rank, in) and ``B`` (..., out, rank), in `grad`'s dtype and device.

    Raises
    ------
    ValueError
        If `grad` is not (..., out, in), `rank` is out of range, `gamma` is not
        positive, `svd` is unknown or `grad` holds NaN/Inf.
    TypeError
        If `grad` is not real or an option has a wrong type.

    References
    ----------
    .. [1] Y. Zhang, F. Liu, Y. Chen, "LoRA-One: One-Step Full Gradient Could Suffice
       for Fine-Tuning Large Language Models, Provably and Efficiently", ICML 2025,
       arXiv:2502.01235.

    Examples
    --------
    >>> import numpy as np
    >>> import lowrank
    >>> G = np.random.default_rng(0).standard_normal((64, 48))
    >>> A, B = lowrank.lora_one_init(G, 4, gamma=16.0, svd="exact")
    >>> Gr = lowrank.truncated_svd(G, 4)
    >>> bool(np.allclose(B @ A, -(Gr.U * Gr.S) @ Gr.Vh / 16.0))
    True
    """
    xp = _validation.namespace(grad, xp=xp, names=("grad",))
    _validation.check_matrix(grad, "grad", min_ndim=2)
    if xp.isdtype(grad.dtype, "complex floating"):
        msg = f"`grad` must be real; got dtype {grad.dtype}"
        raise TypeError(msg)
    out, inn = grad.shape[-2:]
    rank = _validation.check_int(rank, "rank", low=1, high=min(out, inn), high_name="min(out, in)")
    svd = _validation.check_option(svd, "svd", ("randomized", "exact"))
    _validation.check_positive(gamma, "gamma")
    _validation.check_bool(normalize, "normalize")
    check_finite = _validation.check_bool(check_finite, "check_finite")
    work, out_dtype = _validation.to_floating(grad, "grad", xp)
    if check_finite:
        _validation.check_finite(work, "grad", xp)
    block, depth = _ga.svd_defaults(rank, None, None)
    rand = Random(rng, xp, _compat.device(grad))
    U, S, Vh = _ga.top_triplets(work, rank, svd=svd, block=block, depth=depth, rand=rand, xp=xp)
    A, B = lora_one_factors(U, S, Vh, rank, gamma=gamma, normalize=normalize, xp=xp)
    return LoraFactors(xp.astype(A, out_dtype), xp.astype(B, out_dtype))
