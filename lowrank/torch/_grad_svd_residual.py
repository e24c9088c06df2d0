"""LoRA-GA on bases whose weights cannot take the offset (quantized, sharded, read-only).

LoRA-GA keeps the model's function at init by replacing ``W`` with ``W - s B0 A0``. A
quantized weight cannot hold that difference exactly (re-quantizing changes the
outputs by the quantization error), so here the offset stays outside the weight: the
LoRA layer gets two frozen buffers ``A0`` and ``s B0`` and a forward hook subtracting
``s B0 (A0 x)`` from its output. The adapted layer computes
``base(x) + s B A x - s B0 A0 x``, which equals ``base(x)`` at init up to rounding,
and the trainable ``(A, B)`` start at LoRA-GA's factors. The correction costs
``r (m + n)`` numbers and two rank-r products per token; the hook is not saved with
the model (the buffers are: re-register it with the same call after loading).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .._lora_ga import lora_ga_init
from ._grad_svd_init import _SVD_OPTIONS, _one
from ._grad_svd_types import GradientSVD
from ._layers import LoraPair, find_lora_pairs
from ._lora_ga_checks import check_option_names
from ._lora_ga_dist import unwrap
from ._lora_ga_factors import generator
from ._lora_ga_targets import grad_for_pair

__all__ = ["lora_ga_init_residual_"]

_HOOK = "_lowrank_lora_ga_residual_hook"


def lora_ga_init_residual_(
    model: torch.nn.Module,
    grads: Mapping[str, Any],
    *,
    adapter: str | None = None,
    rng: Any = 0,
    **options: Any,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """LoRA-GA init that leaves the base weights alone: the offset is a frozen correction.

    For bases whose weights cannot be changed (an int8/4-bit quantized linear layer,
    a weight without a float parameter): every PEFT-style LoRA layer of `model` gets
    ``(A, B) = (A0, B0)`` from `lowrank.lora_ga_init` (or from a `GradientSVD`), and
    the offset ``-s B0 A0`` is applied on the layer's output by a forward hook with
    frozen buffers ``lora_ga_residual_A`` (= A0) and ``lora_ga_residual_B`` (= s B0),
    so the outputs are unchanged at init (to rounding). Layers get the buffers and
    the hook only once (a second call is refused).

    Parameters
    ----------
    model : torch.nn.Module
        A model whose LoRA layers have ``lora_A``/``lora_B`` ``ModuleDict``s, a
        ``scaling`` dict and a ``base_layer`` (PEFT's layout, any base module).
    grads : mapping
        Gradients (`estimate_gradients`, float bases only) or `GradientSVD`s
        (`estimate_gradient_svd`, any base), keyed by the base layer's weight name.
    adapter : str, optional
        Adapter name; default: the active adapter(s).
    rng : None, int or torch.Generator, default: 0
        Seed of the randomized SVD (dense gradients) and ``direction="random"``.
    **options
        ``direction``, ``scale`` (not ``"weight_svd"``: it reads the weight),
        ``stable_gamma``, ``compat``; ``svd``/``n_oversamples``/``n_power_iter`` for
        dense gradients only.

    Returns
    -------
    dict of str to tuple of torch.Tensor
        Layer name -> the written ``(A0, B0)``.

    Raises
    ------
    TypeError
        If an option is unknown or does not apply.
    ValueError
        If the model has no LoRA layers, a gradient is missing or misshaped, or a layer
        carries the correction already. Nothing is written then.

    Examples
    --------
    >>> import torch
    >>> from peft import LoraConfig, get_peft_model
    >>> from lowrank.torch import lora_ga_init_residual_
    >>> net = get_peft_model(torch.nn.Sequential(torch.nn.Linear(6, 8)),
    ...                      LoraConfig(r=2, target_modules=["0"]))
    >>> gen = torch.Generator().manual_seed(0)
    >>> G, x = torch.randn(8, 6, generator=gen), torch.randn(3, 6, generator=gen)
    >>> with torch.no_grad():
    ...     before = net(x)
    >>> _ = lora_ga_init_residual_(net, {"0.weight": G}, svd="exact")
    >>> with torch.no_grad():
    ...     bool(torch.allclose(net(x), before, atol=1e-5))
    True
    """
    check_option_names(options, "lora_ga_init_residual_")
    for name in ("norm_clip", "weight"):
        if options.get(name) is not None:
            msg = f"`{name}` reads the base weight, which this init leaves out: drop it"
            raise TypeError(msg)
    if options.get("scale") in ("weight_svd", "weightS"):
        msg = "scale='weight_svd' reads the base weight's SVD; use another scale here"
        raise TypeError(msg)
    model = unwrap(model)
    pairs = find_lora_pairs(model, adapter=adapter)
    if not pairs:
        msg = "`model` has no LoRA layers (lora_A/lora_B/scaling); nothing to initialise"
        raise ValueError(msg)
    gen = generator(rng)
    planned = [(pair, *_factors(model, pair, grads, gen, options)) for pair in pairs]
    with torch.no_grad():
        for pair, A, B in planned:
            pair.A.copy_(A.to(pair.A.dtype))
            pair.B.copy_(B.to(pair.B.dtype))
            _attach(pair, pair.A.detach().clone(), pair.scaling * pair.B.detach().clone())
    return {p.name: (p.A.detach().clone(), p.B.detach().clone()) for p, _, _ in planned}


def _factors(model: Any, pair: LoraPair, grads: Any, gen: Any, options: dict[str, Any]) -> Any:
    """``(A0, B0)`` in float32 for one layer (checks first; writes nothing)."""  # numpydoc ignore=PR01,RT01
    if hasattr(pair.module, _HOOK):
        msg = f"LoRA layer {pair.name!r} already carries a LoRA-GA residual correction"
        raise ValueError(msg)
    g = grad_for_pair(model, pair, grads)
    shape = (pair.B.shape[0], pair.A.shape[1])
    if tuple(g.shape) != shape:
        msg = (f"gradient for {pair.name!r} must have shape (out, in) = {shape}; "
               f"got {tuple(g.shape)}")
        raise ValueError(msg)
    if isinstance(g, GradientSVD):
        given = [k for k in _SVD_OPTIONS if options.get(k) is not None]
        if given:
            msg = f"option(s) {given} do not apply to gradient SVDs: leave them out"
            raise TypeError(msg)
        A, B, _ = _one(pair, g, gen, options)
        return A, B
    return lora_ga_init(g.detach().float(), pair.A.shape[0], scaling=pair.scaling, rng=gen,
                        **options)


def _attach(pair: LoraPair, A0: torch.Tensor, sB0: torch.Tensor) -> None:
    """Frozen buffers and the output hook ``y - sB0 (A0 x)`` on the LoRA layer."""  # numpydoc ignore=PR01
    module = pair.module
    module.register_buffer("lora_ga_residual_A", A0)
    module.register_buffer("lora_ga_residual_B", sB0)

    def hook(mod: Any, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        x = args[0].to(mod.lora_ga_residual_A.dtype)
        corr = (x @ mod.lora_ga_residual_A.T) @ mod.lora_ga_residual_B.T
        return out - corr.to(out.dtype)

    setattr(module, _HOOK, module.register_forward_hook(hook))
