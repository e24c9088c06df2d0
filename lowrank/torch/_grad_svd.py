"""The result type of the matrix-free gradient SVD estimator.

`GradientSVD` is what ``estimate_gradient_svd`` returns per target layer and what
``lora_ga_init_`` and the LoRA-One initialisation accept in place of a full gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["GradientSVD"]


class GradientSVD(NamedTuple):
    """Leading singular triplets of one layer's mean gradient, estimated without forming it.

    ``G ≈ U @ diag(S) @ Vh`` with ``G`` the mean gradient ``∂L/∂W`` of the weight in
    ``(out, in)`` layout.

    Attributes
    ----------
    U : torch.Tensor of shape (out, k)
        Left singular vectors (orthonormal columns), float32 or float64.
    S : torch.Tensor of shape (k,)
        Singular values, non-increasing, non-negative.
    Vh : torch.Tensor of shape (k, in)
        Right singular vectors (orthonormal rows).
    error_estimate : float
        A-posteriori estimate of ``‖G - U diag(S) Vh‖_F / ‖G‖_F``.
    energy_captured : float
        Estimate of ``‖S‖² / ‖G‖_F²``.
    gap : float
        Estimate of the spectral gap ``σ_k / σ_{k+1}`` (``inf`` past the rank; ``nan``
        where it cannot be estimated).
    n_sweeps : int
        Forward+backward sweeps over the estimation batches that were used.
    """

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor
    error_estimate: float
    energy_captured: float
    gap: float
    n_sweeps: int
