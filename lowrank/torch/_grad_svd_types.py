"""The result type of the matrix-free gradient SVD (`estimate_gradient_svd`).

`GradientSVD` is what ``estimate_gradient_svd`` returns per target layer and what
``lora_ga_init_`` and the LoRA-One initialisation accept in place of a full gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["GradientSVD"]


class GradientSVD(NamedTuple):
    """Leading singular triplets of one layer's mean gradient, estimated without forming it.

    ``G ≈ U @ diag(S) @ Vh`` with ``G`` the mean gradient ``∂L/∂W`` in the weight's
    own layout, as `estimate_gradients` returns it: ``(out, in)`` for ``nn.Linear``,
    ``(in, out)`` for a transformers ``Conv1D``.

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

    @property
    def T(self) -> GradientSVD:  # noqa: N802 - as torch.Tensor.T
        """The SVD of the transposed gradient (``Vhᵀ``, ``S``, ``Uᵀ``)."""  # numpydoc ignore=RT01
        return self._replace(U=self.Vh.T, Vh=self.U.T)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the gradient the triplets belong to."""  # numpydoc ignore=RT01
        return (int(self.U.shape[0]), int(self.Vh.shape[1]))
