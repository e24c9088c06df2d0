"""LoRA-One initialisation of PEFT LoRA layers in place, from gradients or gradient SVDs.

The maths is ``lowrank.lora_one_init`` / ``lowrank.lora_one_factors``; this module finds
the layers, computes every factor first, then writes them (nothing is written if any
layer fails). The base weights are never touched: LoRA-One has no offset, so it also
works on bases whose weights cannot be changed (quantized ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .._lora_one import lora_one_factors, lora_one_init
from ._grad_svd_types import GradientSVD
from ._layers import find_lora_pairs
from ._lora_ga_dist import unwrap
from ._lora_ga_factors import generator
from ._lora_ga_targets import grad_for_pair

__all__ = ["lora_one_init_"]


def lora_one_init_(
    model: torch.nn.Module,
    grads: Mapping[str, Any],
    *,
    gamma: float,
    normalize: bool = False,
    adapter: str | None = None,
    svd: str = "randomized",
    rng: Any = 0,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Initialise every PEFT LoRA layer by LoRA-One, in place, all or nothing.

    For each layer with scaling ``s`` and rank ``r``: ``B0 = U_r S_r^½ / √γ`` and
    ``A0 = S_r^½ V_rᵀ / √γ`` from the SVD ``-G = U S Vᵀ`` of its gradient, so the
    adapted weight starts at ``W - (s/γ) G_r`` (one gradient step along the best
    rank-r part of the gradient; Zhang, Liu and Chen, ICML 2025). The base weight is
    not changed (LoRA-One has no offset): the model's outputs move at init by design.

    Parameters
    ----------
    model : torch.nn.Module
        A model with PEFT LoRA layers (DDP wrappers are unwrapped).
    grads : mapping
        From `estimate_gradients` (tensors) or `estimate_gradient_svd` (`GradientSVD`
        with at least ``r`` triplets), keyed by parameter name.
    gamma : float
        The paper's γ > 0.
    normalize : bool, default: False
        Also divide both factors by ``√σ_1`` (the official code's normalised variant).
    adapter : str, optional
        PEFT adapter name; default: the active adapter(s).
    svd : {"randomized", "exact"}, default: "randomized"
        SVD of dense gradients (unused for `GradientSVD` entries).
    rng : None, int or torch.Generator, default: 0
        Seed of the randomized SVD.

    Returns
    -------
    dict of str to tuple of torch.Tensor
        Layer name -> the written ``(A0, B0)``.

    Raises
    ------
    ValueError
        If the model has no LoRA layers, a gradient is missing or misshaped, an
        estimate holds fewer than ``r`` triplets, or an option is out of range.

    Examples
    --------
    >>> import torch
    >>> from lowrank.torch import lora_one_init_
    >>> from peft import LoraConfig, get_peft_model
    >>> net = get_peft_model(torch.nn.Sequential(torch.nn.Linear(6, 8)),
    ...                      LoraConfig(r=2, target_modules=["0"]))
    >>> G = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    >>> out = lora_one_init_(net, {"0.weight": G}, gamma=4.0, svd="exact")
    >>> (A, B), = out.values()
    >>> tuple(A.shape), tuple(B.shape)
    ((2, 6), (8, 2))
    """
    model = unwrap(model)
    pairs = find_lora_pairs(model, adapter=adapter)
    if not pairs:
        msg = "`model` has no PEFT LoRA layers (lora_A/lora_B/scaling); nothing to initialise"
        raise ValueError(msg)
    gen = generator(rng)
    planned = []
    for pair in pairs:
        g = grad_for_pair(model, pair, grads)
        r, shape = pair.A.shape[0], (pair.B.shape[0], pair.A.shape[1])
        if tuple(g.shape) != shape:
            msg = (f"gradient for {pair.name!r} must have shape (out, in) = {shape}; "
                   f"got {tuple(g.shape)}")
            raise ValueError(msg)
        if isinstance(g, GradientSVD):
            if g.S.shape[0] < r:
                msg = (f"LoRA-One of rank {r} needs the top {r} gradient triplets of "
                       f"{pair.name!r}; the estimate holds {g.S.shape[0]}")
                raise ValueError(msg)
            A, B = lora_one_factors(g.U.float(), g.S.float(), g.Vh.float(), r, gamma=gamma,
                                    normalize=normalize)
        else:
            A, B = lora_one_init(g.detach().float(), r, gamma=gamma, normalize=normalize,
                                 svd=svd, rng=gen)
        planned.append((pair, A, B))
    with torch.no_grad():
        for pair, A, B in planned:
            pair.A.copy_(A.to(pair.A.dtype))
            pair.B.copy_(B.to(pair.B.dtype))
    return {p.name: (p.A.detach().clone(), p.B.detach().clone()) for p, _, _ in planned}
