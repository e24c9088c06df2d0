"""Structural discovery of LoRA layers (PEFT ``LoraLayer``-shaped modules), never by name."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["LoraPair", "find_lora_pairs", "unsupported_lora_layers"]


@dataclass(frozen=True)
class LoraPair:
    """One LoRA adapter on one layer, in PEFT layout (A: (r, in), B: (out, r)).

    Attributes
    ----------
    name : str
        Qualified module name (for messages and state keys).
    A, B : torch.nn.Parameter
        ``lora_A`` weight, shape (r, in), and ``lora_B`` weight, shape (out, r).
    scaling : float
        The adapter's own scaling (alpha / r, or alpha / sqrt(r) under rsLoRA).
    weight : torch.Tensor or None
        The frozen base weight in (out, in) layout, if known.
    fan_in_fan_out : bool
        True when the base weight is stored transposed (GPT-2 ``Conv1D``).
    module : torch.nn.Module or None
        The LoRA layer itself.
    """

    name: str
    A: torch.nn.Parameter
    B: torch.nn.Parameter
    scaling: float
    weight: torch.Tensor | None = None
    fan_in_fan_out: bool = False
    module: torch.nn.Module | None = None


def _is_lora_layer(module: torch.nn.Module) -> bool:
    return (
        isinstance(getattr(module, "lora_A", None), torch.nn.ModuleDict)
        and isinstance(getattr(module, "lora_B", None), torch.nn.ModuleDict)
        and isinstance(getattr(module, "scaling", None), dict)
    )


def _base_weight(module: torch.nn.Module) -> torch.Tensor | None:
    base = getattr(module, "base_layer", module)
    return getattr(base, "weight", None)


def find_lora_pairs(
    model: torch.nn.Module, *, adapter: str | None = None
) -> list[LoraPair]:
    """Find every (lora_A, lora_B) pair of a PEFT model by structure.

    Parameters
    ----------
    model : torch.nn.Module
        A model holding PEFT LoRA layers (modules with ``lora_A``/``lora_B``
        ``ModuleDict``s and a ``scaling`` dict).
    adapter : str, optional
        Adapter name; default: the layer's active adapter(s), else all adapters.

    Returns
    -------
    list of LoraPair
        One entry per layer and adapter, in module order. Only ``nn.Linear``-style
        adapters (2-D weights) are returned.

    Raises
    ------
    ValueError
        If ``adapter`` is given but absent from a LoRA layer.

    Examples
    --------
    >>> import torch
    >>> from lowrank.torch import find_lora_pairs
    >>> find_lora_pairs(torch.nn.Linear(3, 3))
    []
    """
    pairs = []
    for name, module in model.named_modules():
        if not _is_lora_layer(module):
            continue
        for key in _adapters(module, adapter, name):
            a_mod, b_mod = module.lora_A[key], module.lora_B[key]
            A, B = getattr(a_mod, "weight", None), getattr(b_mod, "weight", None)
            if A is None or B is None or A.ndim != 2 or B.ndim != 2:
                continue
            pairs.append(
                LoraPair(
                    name=f"{name}.{key}" if name else key,
                    A=A,
                    B=B,
                    scaling=float(module.scaling[key]),
                    weight=_base_weight(module),
                    fan_in_fan_out=bool(getattr(module, "fan_in_fan_out", False)),
                    module=module,
                )
            )
    return pairs


def _adapters(module: Any, adapter: str | None, name: str) -> Iterable[str]:
    keys = list(module.lora_A.keys())
    if adapter is not None:
        if adapter not in keys:
            msg = f"`adapter` {adapter!r} not found in LoRA layer {name!r}; it has {keys}"
            raise ValueError(msg)
        return [adapter]
    active = getattr(module, "active_adapters", None) or getattr(module, "active_adapter", None)
    if isinstance(active, str):
        active = [active]
    chosen = [k for k in (active or []) if k in keys]
    return chosen or keys


def unsupported_lora_layers(model: torch.nn.Module, *, adapter: str | None = None) -> list[str]:
    """List the LoRA layers `find_lora_pairs` leaves out: embedding and convolution LoRA.

    Parameters
    ----------
    model : torch.nn.Module
        A model holding PEFT LoRA layers.
    adapter : str, optional
        Adapter name; default: every adapter.

    Returns
    -------
    list of str
        ``"module.adapter"`` for each ``lora_embedding_A/B`` adapter and each LoRA
        adapter whose factors are not 2-D weights (convolutions).
    """
    found = []
    for name, module in model.named_modules():
        emb = getattr(module, "lora_embedding_A", None)
        if isinstance(emb, torch.nn.ParameterDict):
            found += [f"{name}.{k}" for k in emb if adapter in (None, k)]
        if not _is_lora_layer(module):
            continue
        for key in module.lora_A:
            A = getattr(module.lora_A[key], "weight", None)
            B = getattr(module.lora_B[key], "weight", None) if key in module.lora_B else None
            if adapter in (None, key) and (A is None or B is None or A.ndim != 2 or B.ndim != 2):
                found.append(f"{name}.{key}")
    return found
