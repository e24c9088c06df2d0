"""LoRA-GA plumbing: which weights get gradients, how batches run, output checks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ._layers import LoraPair, find_lora_pairs

__all__ = ["forward", "grad_for_pair", "model_outputs_close", "target_parameters"]


def _is_linear_like(module: torch.nn.Module) -> bool:
    """nn.Linear or a transformers-style Conv1D (weight stored (in, out))."""  # numpydoc ignore=PR01,RT01
    weight = getattr(module, "weight", None)
    is_conv1d = type(module).__name__ == "Conv1D" and hasattr(module, "nf")
    return (
        isinstance(weight, torch.nn.Parameter)
        and weight.ndim == 2
        and (isinstance(module, torch.nn.Linear) or is_conv1d)
    )


def target_parameters(
    model: torch.nn.Module, targets: Iterable[Any] | None
) -> dict[str, torch.nn.Parameter]:
    """Name -> parameter for the estimation targets (deduplicated by identity)."""  # numpydoc ignore=PR01,RT01
    names = {id(p): n for n, p in model.named_parameters()}
    modules = dict(model.named_modules())
    if targets is None:
        pairs = find_lora_pairs(model)
        found = (
            [p.weight for p in pairs if p.weight is not None]
            if pairs
            else [m.weight for m in modules.values() if _is_linear_like(m)]
        )
    else:
        found = [_resolve(t, model, modules) for t in targets]
    out: dict[str, torch.nn.Parameter] = {}
    for p in found:
        if id(p) not in names:
            msg = "a target parameter does not belong to `model`"
            raise ValueError(msg)
        out[names[id(p)]] = p
    if not out:
        msg = "no target weights found: pass `targets=` (module or parameter names)"
        raise ValueError(msg)
    return out


def _resolve(t: Any, model: torch.nn.Module, modules: dict[str, torch.nn.Module]) -> Any:
    """A target given as a parameter, a module name or a parameter name."""  # numpydoc ignore=PR01,RT01
    if isinstance(t, torch.nn.Parameter):
        return t
    if isinstance(t, str):
        if t in modules:
            base = getattr(modules[t], "base_layer", modules[t])
            if getattr(base, "weight", None) is not None:
                return base.weight
        params = dict(model.named_parameters())
        if t in params:
            return params[t]
    msg = f"`targets` entry {t!r} is neither a parameter nor a module/parameter name of the model"
    raise ValueError(msg)


def forward(model: torch.nn.Module, batch: Any, need_loss: bool) -> Any:
    """Call the model on a batch; with ``need_loss`` return its scalar loss."""  # numpydoc ignore=PR01,RT01
    if isinstance(batch, Mapping):
        out = model(**batch)
    elif isinstance(batch, (tuple, list)):
        out = model(*batch)
    else:
        out = model(batch)
    if not need_loss:
        return getattr(out, "logits", out)
    loss = getattr(out, "loss", None)
    if loss is None and isinstance(out, Mapping):
        loss = out.get("loss")
    if loss is None and isinstance(out, torch.Tensor) and out.ndim == 0:
        loss = out
    if loss is None:
        msg = "the model output has no `.loss` and is not a scalar: pass `loss_fn(model, batch)`"
        raise TypeError(msg)
    return loss


def _normalise(name: str) -> str:
    """Parameter name without PEFT's wrapping (``base_model.model.`` and ``.base_layer``)."""  # numpydoc ignore=PR01,RT01
    for prefix in ("base_model.model.", "model."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name.replace(".base_layer.", ".")


def grad_for_pair(model: torch.nn.Module, pair: LoraPair, grads: Mapping[str, Any]) -> Any:
    """The (out, in) gradient of a pair's base weight from an `estimate_gradients` dict."""  # numpydoc ignore=PR01,RT01
    names = [n for n, p in model.named_parameters(remove_duplicate=False) if p is pair.weight]
    by_norm = {_normalise(k): v for k, v in grads.items()}
    for n in names:
        g = grads.get(n, by_norm.get(_normalise(n)))
        if g is not None:
            return g.T if pair.fan_in_fan_out else g
    msg = f"no gradient for the base weight of LoRA layer {pair.name!r} (looked for {names})"
    raise ValueError(msg)


def model_outputs_close(model: Any, inputs: Any, before: Any) -> Any:
    """Return outputs on ``inputs`` (no grad, eval mode); with ``before``, raise unless close."""  # numpydoc ignore=PR01,RT01
    if inputs is None or not isinstance(model, torch.nn.Module):
        return None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = forward(model, inputs, False)
    finally:
        model.train(was_training)
    if before is None:
        return out.detach().clone()
    ref = before.float()
    diff = float((out.float() - ref).abs().max())
    tol = 64 * torch.finfo(out.dtype).eps * max(1.0, float(ref.abs().max()))
    if not diff <= tol:
        msg = f"model outputs changed at LoRA-GA init: max abs difference {diff:.3g} > {tol:.3g}"
        raise ValueError(msg)
    return out
