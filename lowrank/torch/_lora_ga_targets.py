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
        if not p.is_floating_point() or hasattr(p, "quant_state"):
            msg = (
                f"target {names[id(p)]!r} is quantized or not floating ({type(p).__name__}, "
                f"dtype {p.dtype}): no gradient can be formed for it (as in PEFT, LoRA-GA "
                "needs full-precision weights)"
            )
            raise TypeError(msg)
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


def grad_for_pair(
    model: torch.nn.Module, pair: LoraPair, grads: Mapping[str, Any], required: bool = True
) -> Any:
    """The (out, in) gradient of a pair's base weight from an `estimate_gradients` dict.

    A missing gradient raises, or gives None when not `required`.
    """  # numpydoc ignore=PR01,RT01
    names = [n for n, p in model.named_parameters(remove_duplicate=False) if p is pair.weight]
    own = [n for n, m in model.named_modules() if m is getattr(pair.module, "base_layer", None)]
    own_names = [f"{n}.weight" for n in own]  # the layer's own name first (tied weights)
    names = own_names + [n for n in names if n not in own_names]
    by_norm = {_normalise(k): v for k, v in grads.items()}
    for n in names:
        g = grads.get(n, by_norm.get(_normalise(n)))
        if g is not None:
            return g.T if pair.fan_in_fan_out else g
    if not required:
        return None
    msg = f"no gradient for the base weight of LoRA layer {pair.name!r} (looked for {names})"
    raise ValueError(msg)


def model_outputs_close(model: Any, inputs: Any, before: Any, growth: float = 1.0) -> Any:
    """Return the outputs on ``inputs`` (no grad, eval mode); with ``before``, check them.

    Float32/float64 models: within ``64 eps * growth`` of the output scale, where
    ``growth = 1 + max|s B0 A0| / max|W|`` over the layers: rounding the residual weight
    ``W - s B0 A0`` costs up to eps/2 of its entries, which grow with the offset. Models with bf16/fp16
    tensors are also run with those tensors in float32 (the exact function of the
    stored weights): the init may change that function by at most the model's own
    rounding error (its low-precision outputs against its float32 outputs, before the
    init), plus 64 float32 eps of the output scale.
    """  # numpydoc ignore=PR01,RT01
    if inputs is None or not isinstance(model, torch.nn.Module):
        return None
    low = _low_precision(model)
    out = _outputs(model, inputs)
    exact = _outputs_float32(model, inputs, low) if low else None
    if before is None:
        return out, exact
    out_before, exact_before = before
    scale = max(1.0, float(out_before.float().abs().max()))
    if exact_before is None:
        diff = float((out.float() - out_before.float()).abs().max())
        tol = 64 * torch.finfo(out.dtype).eps * scale * growth
        what = f"{tol:.3g} (64 eps of the output scale, times {growth:.3g} for the offsets)"
    else:
        own = float((out_before.float() - exact_before).abs().max())
        diff = float((exact - exact_before).abs().max())
        tol = own + 64 * torch.finfo(torch.float32).eps * scale
        what = f"{tol:.3g} (the model's own {out.dtype} rounding error, run in float32)"
    if not diff <= tol:
        msg = f"model outputs changed at LoRA-GA init: max abs difference {diff:.3g} > {what}"
        raise ValueError(msg)
    return out, exact


def _outputs(model: torch.nn.Module, inputs: Any) -> torch.Tensor:
    """Detached outputs in eval mode without grad; every module's mode restored."""  # numpydoc ignore=PR01,RT01
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            return _flat(forward(model, inputs, False)).clone()
    finally:
        for m, mode in modes:
            m.training = mode


def _flat(out: Any) -> torch.Tensor:
    """One detached tensor from a model output: itself, or its floating tensors flattened.

    Tuples, lists and mappings (``ModelOutput`` without ``logits``) are walked in order.
    """  # numpydoc ignore=PR01,RT01
    if isinstance(out, torch.Tensor):
        return out.detach()
    items = out.values() if isinstance(out, Mapping) else out
    if isinstance(items, (tuple, list)) or isinstance(out, Mapping):
        parts = [t.reshape(-1) for t in map(_flat_or_none, items) if t is not None]
        if parts:
            return torch.cat(parts)
    msg = f"the model's output on `check_inputs` holds no floating tensor ({type(out).__name__})"
    raise TypeError(msg)


def _flat_or_none(out: Any) -> torch.Tensor | None:
    """`_flat` of a floating part, None for anything else."""  # numpydoc ignore=PR01,RT01
    try:
        t = _flat(out)
    except TypeError:
        return None
    return t if t.is_floating_point() else None


def _low_precision(model: torch.nn.Module) -> list[torch.Tensor]:
    """Parameters and buffers stored in bf16/fp16."""  # numpydoc ignore=PR01,RT01
    tensors = [*model.parameters(), *model.buffers()]
    return [t for t in tensors if t.dtype in (torch.bfloat16, torch.float16)]


def _outputs_float32(model: torch.nn.Module, inputs: Any, low: list[torch.Tensor]) -> Any:
    """Outputs with every low-precision tensor (and input) in float32, then put back.

    The original storages are reattached afterwards, so the model is bitwise unchanged.
    """  # numpydoc ignore=PR01,RT01
    originals = [t.data for t in low]
    try:
        for t in low:
            t.data = t.data.float()
        return _outputs(model, _inputs_float32(inputs)).float()
    finally:
        for t, data in zip(low, originals, strict=True):
            t.data = data


def _inputs_float32(batch: Any) -> Any:
    """The batch with bf16/fp16 tensors cast to float32 (other entries as they are)."""  # numpydoc ignore=PR01,RT01
    if isinstance(batch, torch.Tensor):
        return batch.float() if batch.dtype in (torch.bfloat16, torch.float16) else batch
    if isinstance(batch, Mapping):
        return {k: _inputs_float32(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_inputs_float32(v) for v in batch)
    return batch
