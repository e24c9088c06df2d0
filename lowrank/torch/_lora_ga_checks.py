"""LoRA-GA safety: everything checked before the first write, and an exact undo after it.

A LoRA-GA init rewrites three tensors per layer (the base weight, ``lora_A``,
``lora_B``). Any refusal must leave the model bitwise unchanged, and a second init of
the same adapter must be refused, since it would subtract a second offset from a base
weight that already carries the first one.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from ._layers import LoraPair

__all__ = [
    "INIT_OPTIONS",
    "check_base_weights",
    "check_config_not_initialised",
    "check_not_initialised",
    "check_option_names",
    "check_ranks",
    "find_ties",
    "mark_config_initialised",
    "mark_initialised",
    "restore_on_failure",
    "untie_",
]

INIT_OPTIONS = (
    "compat",
    "direction",
    "n_oversamples",
    "n_power_iter",
    "norm_clip",
    "scale",
    "stable_gamma",
    "svd",
)
_MARK = "_lowrank_lora_ga_adapters"  # attribute on the LoRA layer: set of adapter names
_QUANT_WEIGHTS = ("Params4bit", "Int8Params", "QTensor", "AffineQuantizedTensor")


def check_option_names(options: dict[str, Any], function: str) -> None:
    """Refuse keyword options that `lowrank.lora_ga_init` does not take, by name."""  # numpydoc ignore=PR01
    unknown = sorted(set(options) - set(INIT_OPTIONS))
    if unknown:
        msg = (
            f"{function}() got unknown option(s) {unknown}; the LoRA-GA options are "
            f"{list(INIT_OPTIONS)}"
        )
        raise TypeError(msg)


def _adapter_key(pair: LoraPair) -> str:
    """The adapter name of a pair (the last component of its name)."""  # numpydoc ignore=PR01,RT01
    return pair.name.rsplit(".", 1)[-1]


def check_not_initialised(pairs: Iterable[LoraPair]) -> None:
    """Refuse adapters already initialised by LoRA-GA, or merged into their base weight."""  # numpydoc ignore=PR01
    for pair in pairs:
        if pair.module is None:
            continue
        key = _adapter_key(pair)
        if key in getattr(pair.module, _MARK, ()):
            msg = (
                f"LoRA layer {pair.name!r} was already initialised by LoRA-GA: its base "
                "weight already carries the offset -s B0 A0, and a second init would "
                "subtract another one (the model's outputs would move). Start again from "
                "the original base model (or rebuild it with apply_lora_ga_offset_)"
            )
            raise ValueError(msg)
        if key in (getattr(pair.module, "merged_adapters", None) or ()):
            msg = (
                f"LoRA layer {pair.name!r} is merged into its base weight (merge_adapter); "
                "LoRA-GA must offset the unmerged base weight: call unmerge_adapter() first"
            )
            raise ValueError(msg)
        if bool(pair.B.detach().any()):
            msg = (
                f"LoRA layer {pair.name!r} has a nonzero lora_B: the adapter already changes "
                "the model (trained, loaded, or a non-zero init), and LoRA-GA would replace "
                "it, changing the model's outputs. Initialise a fresh adapter (B = 0)"
            )
            raise ValueError(msg)


def _peft_configs(model: Any) -> dict[str, Any]:
    """The model's PEFT configs by adapter name (empty for a model without them)."""  # numpydoc ignore=PR01,RT01
    configs = getattr(model, "peft_config", None)
    return configs if isinstance(configs, dict) else {}


def check_config_not_initialised(model: Any, pairs: Iterable[LoraPair]) -> None:
    """Refuse adapters whose PEFT config records a LoRA-GA init (``init_lora_weights``).

    The in-memory mark does not survive ``save_pretrained``; the config does, so a
    reloaded LoRA-GA adapter (whose base must carry the offset) is recognised too.
    """  # numpydoc ignore=PR01
    configs = _peft_configs(model)
    for key in dict.fromkeys(_adapter_key(p) for p in pairs):
        if getattr(configs.get(key), "init_lora_weights", None) == "lora_ga":
            msg = (
                f"adapter {key!r} was already initialised by LoRA-GA: its PEFT config says "
                "init_lora_weights='lora_ga' (after an init, or reloaded from what "
                "save_pretrained wrote), so its base weights carry the offset and a second "
                "init would subtract another one. Rebuild the initialised model with "
                "apply_lora_ga_offset_ from the saved state, or load the stock-PEFT export "
                "(export_lora_adapter) on the original base; for a fresh adapter, use "
                "PEFT's default init_lora_weights instead of 'lora_ga'"
            )
            raise ValueError(msg)


def mark_config_initialised(model: Any, pairs: Iterable[LoraPair]) -> None:
    """Record the LoRA-GA init in the adapters' PEFT configs, which save_pretrained writes.

    ``init_lora_weights="lora_ga"`` is PEFT's own value for LoRA-GA adapters; loading
    such a saved adapter with stock PEFT works (PEFT then initialises the layers
    plainly and loads the saved weights over them).
    """  # numpydoc ignore=PR01
    configs = _peft_configs(model)
    for key in dict.fromkeys(_adapter_key(p) for p in pairs):
        if key in configs and hasattr(configs[key], "init_lora_weights"):
            configs[key].init_lora_weights = "lora_ga"


def mark_initialised(pairs: Iterable[LoraPair]) -> None:
    """Record on each LoRA layer that this adapter now carries a LoRA-GA offset."""  # numpydoc ignore=PR01
    for pair in pairs:
        if pair.module is not None:
            marks = set(getattr(pair.module, _MARK, ()))
            marks.add(_adapter_key(pair))
            object.__setattr__(pair.module, _MARK, marks)


def check_base_weights(pairs: Iterable[LoraPair]) -> None:
    """Refuse quantized or non-floating base weights (no gradient, no exact offset)."""  # numpydoc ignore=PR01
    for pair in pairs:
        w = pair.weight
        base = getattr(pair.module, "base_layer", None)
        if not isinstance(w, torch.Tensor):
            msg = (
                f"LoRA layer {pair.name!r} has no tensor base weight (its base layer "
                f"{type(base).__name__} holds {type(w).__name__}): lora_ga_init_ needs a "
                "full-precision weight to subtract the offset from; for such bases use "
                "estimate_gradient_svd with lora_ga_init_residual_"
            )
            raise TypeError(msg)
        quantized = (
            type(w).__name__ in _QUANT_WEIGHTS
            or hasattr(w, "quant_state")
            or hasattr(base, "quant_state")
        )
        if quantized or not w.is_floating_point():
            kind = type(w).__name__ if quantized else f"dtype {w.dtype}"
            msg = (
                f"LoRA layer {pair.name!r} has a quantized or non-floating base weight "
                f"({kind}): LoRA-GA needs a full-precision weight to form its gradient and "
                "subtract the offset exactly (PEFT refuses quantized models too)"
            )
            raise TypeError(msg)


def check_ranks(pairs: Iterable[LoraPair]) -> None:
    """Refuse layers with ``2 r > min(out, in)`` (LoRA-GA needs 2r singular triplets)."""  # numpydoc ignore=PR01
    for pair in pairs:
        r, out, inn = pair.A.shape[0], pair.B.shape[0], pair.A.shape[1]
        if 2 * r > min(out, inn):
            msg = (
                f"LoRA layer {pair.name!r} has rank r = {r} but LoRA-GA needs 2r <= "
                f"min(out, in) = {min(out, inn)}; lower r for this layer (rank_pattern)"
            )
            raise ValueError(msg)


def _storage_ptr(t: torch.Tensor) -> int:
    """Address of a tensor's storage (0 for meta or storage-less tensors)."""  # numpydoc ignore=PR01,RT01
    try:
        return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):
        return 0


def find_ties(model: Any, pairs: Iterable[LoraPair]) -> dict[str, list[str]]:
    """For each pair whose base weight is used elsewhere, every other user's name.

    A user is any module parameter or buffer of `model` that is the same tensor, or
    shares its storage (tied embeddings and heads, views), found over all modules.
    """  # numpydoc ignore=PR01,RT01
    if not isinstance(model, torch.nn.Module):
        return {}
    users: dict[int, list[tuple[str, Any, torch.Tensor]]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for t_name, t in tensors:
            ptr = _storage_ptr(t)
            if ptr:
                full = f"{mod_name}.{t_name}" if mod_name else t_name
                users.setdefault(ptr, []).append((full, module, t))
    ties = {}
    for pair in pairs:
        own = getattr(pair.module, "base_layer", pair.module)
        others = [
            name
            for name, module, t in users.get(_storage_ptr(pair.weight), [])
            if not (module is own and t is pair.weight)
        ]
        if others:
            ties[pair.name] = sorted(set(others))
    return ties


def untie_(pairs: list[LoraPair], ties: dict[str, list[str]]) -> list[LoraPair]:
    """Give each tied pair's base layer its own copy of the weight; return updated pairs."""  # numpydoc ignore=PR01,RT01
    out = []
    for pair in pairs:
        if pair.name in ties:
            base = getattr(pair.module, "base_layer", pair.module)
            w = pair.weight
            copy = torch.nn.Parameter(w.detach().clone(), requires_grad=w.requires_grad)
            base.weight = copy
            pair = dataclasses.replace(pair, weight=copy)
        out.append(pair)
    return out


@contextlib.contextmanager
def restore_on_failure(pairs: list[LoraPair]) -> Iterator[None]:
    """Snapshot every tensor a LoRA-GA write touches; on any exception put them back.

    The snapshot holds one copy of each touched base weight and adapter (the price of
    an exact undo: rounding makes ``W_res + s B0 A0`` differ from ``W`` in low
    precision). Untied copies are swapped back for the original shared parameter.
    """  # numpydoc ignore=PR01,YI01
    saved = []
    for pair in pairs:
        base = getattr(pair.module, "base_layer", pair.module)
        original = getattr(base, "weight", None) if base is not None else None
        tensors = (pair.weight, pair.A, pair.B)
        saved.append((base, original, [(t, t.detach().clone()) for t in tensors]))
    try:
        yield
    except BaseException:
        with torch.no_grad():
            for base, original, copies in saved:
                for t, c in copies:
                    t.copy_(c)
                if base is not None and original is not None and base.weight is not original:
                    base.weight = original
        raise
