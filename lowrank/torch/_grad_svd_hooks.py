"""Hooks that stream ``G X`` and ``Gᵀ Y`` of linear layers without forming ``G``.

For a layer ``y = x Wᵀ + b`` (any module applying one linear map to the last axis) the
gradient of the loss with respect to ``W`` is ``G = Σ_t δ_t x_tᵀ`` over the tokens
``t`` (``δ = ∂L/∂y``). A forward hook keeps the layer's input ``x`` and hangs a tensor
hook on its output ``y``; when backward reaches ``y`` that hook adds
``δᵀ (x X)`` to ``G X`` and ``xᵀ (δ Y)`` to ``Gᵀ Y``: ``O((m + n) ℓ)`` per token, no
weight gradient and no ``m x n`` buffer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from ._layers import find_lora_pairs
from ._lora_ga_targets import _is_linear_like

__all__ = ["LayerTap", "dropout_modules", "tapped", "target_layers"]


@dataclass(eq=False)
class LayerTap:
    """One target layer: its module, ``(out, in)`` shape, and this sweep's products."""  # numpydoc ignore=PR01

    name: str
    module: torch.nn.Module
    shape: tuple[int, int]
    device: torch.device
    dtype: torch.dtype
    X: Any = None
    Y: Any = None
    GX: Any = None
    GtY: Any = None
    hit: bool = False
    transposed: bool = False
    wrapper: Any = None  # the PEFT LoRA layer around `module`, if any
    pending: list[Any] = field(default_factory=list)

    def start_sweep(self, X: torch.Tensor, Y: torch.Tensor, GX: torch.Tensor,
                    GtY: torch.Tensor) -> None:
        """Set this sweep's inputs and the zeroed products to accumulate into."""  # numpydoc ignore=PR01
        self.X, self.Y, self.GX, self.GtY = X, Y, GX, GtY

    def add(self, x: torch.Tensor, delta: torch.Tensor) -> None:
        """Fold one use of the layer (input ``x``, output gradient ``delta``)."""  # numpydoc ignore=PR01
        m, n = self.shape
        x = x.detach().reshape(-1, n).to(self.X.dtype)
        d = delta.detach().reshape(-1, m).to(self.X.dtype)
        if self.X.shape[1]:
            self.GX.addmm_(d.T, x @ self.X)
        if self.Y.shape[1]:
            self.GtY.addmm_(x.T, d @ self.Y)
        self.hit = True


def _shape(module: torch.nn.Module, name: str) -> tuple[int, int]:
    """``(out, in)`` of a linear-like module (Conv1D stores its weight (in, out))."""  # numpydoc ignore=PR01,RT01
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and weight is not None and weight.ndim == 2:
        return int(weight.shape[1]), int(weight.shape[0])
    out, inn = getattr(module, "out_features", None), getattr(module, "in_features", None)
    if isinstance(out, int) and isinstance(inn, int):
        return out, inn
    if isinstance(weight, torch.Tensor) and weight.ndim == 2 and weight.is_floating_point():
        return int(weight.shape[0]), int(weight.shape[1])
    msg = (
        f"target {name!r} ({type(module).__name__}) is not a linear layer whose (out, in) "
        "shape can be read: it needs in_features/out_features or a 2-D weight"
    )
    raise TypeError(msg)


def _placement(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device of the module's tensors and the work dtype (float64 only for float64 layers)."""  # numpydoc ignore=PR01,RT01
    tensors = [*module.parameters(), *module.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    wide = any(t.dtype == torch.float64 for t in tensors)
    return device, torch.float64 if wide else torch.float32


def _resolve(t: Any, model: torch.nn.Module, modules: dict[str, torch.nn.Module]) -> Any:
    """(name, module) for a target given as a module/parameter name, module or parameter."""  # numpydoc ignore=PR01,RT01
    by_id = {id(m): n for n, m in modules.items()}
    if isinstance(t, torch.nn.Module) and id(t) in by_id:
        return by_id[id(t)], t
    if isinstance(t, str) and t in modules:
        return t, modules[t]
    owners = {id(p): n.rpartition(".")[0] for n, p in model.named_parameters()}
    if isinstance(t, torch.nn.Parameter) and id(t) in owners:
        return owners[id(t)], modules[owners[id(t)]]
    owner, _, leaf = t.rpartition(".") if isinstance(t, str) else ("", "", "")
    if owner in modules and leaf == "weight" and owner:  # also a quantized layer's "weight"
        return owner, modules[owner]
    msg = (f"`targets` entry {t!r} is neither a module, a parameter nor a module/parameter "
           "name of the model")
    raise ValueError(msg)


def target_layers(model: torch.nn.Module, targets: Iterable[Any] | None) -> list[LayerTap]:
    """The target layers (LoRA base layers by default), deduplicated, in module order.

    A PEFT LoRA layer stands for its ``base_layer``. The key is the layer's weight name
    (``"<module>.weight"``), as in `estimate_gradients`, also for modules without a
    float weight parameter (quantized ones).
    """  # numpydoc ignore=PR01,RT01
    modules = dict(model.named_modules())
    if targets is None:
        pairs = find_lora_pairs(model)
        found = [pair.module for pair in pairs] if pairs else [
            m for m in modules.values() if _is_linear_like(m)]
        chosen = [_resolve(m, model, modules) for m in found]
    else:
        chosen = [_resolve(t, model, modules) for t in targets]
    taps, seen = [], set()
    for name, module in chosen:
        wrapper, base = None, getattr(module, "base_layer", None)
        if isinstance(base, torch.nn.Module):
            wrapper, (name, module) = module, (f"{name}.base_layer", base)
        if id(module) in seen:
            continue
        seen.add(id(module))
        tap = LayerTap(f"{name}.weight", module, _shape(module, name), *_placement(module))
        tap.transposed = type(module).__name__ == "Conv1D"
        tap.wrapper = wrapper
        taps.append(tap)
    if not taps:
        msg = "no target layers found: pass `targets=` (module names or modules)"
        raise ValueError(msg)
    return taps


def dropout_modules(model: torch.nn.Module) -> list[str]:
    """Names of dropout modules with ``p > 0`` in train mode, outside LoRA branches.

    A LoRA branch's own dropout only reaches the loss through ``lora_B`` (zero before
    the init); if it matters, the per-sweep loss check sees it.
    """  # numpydoc ignore=PR01,RT01
    skip = set()
    for module in model.modules():
        branch = getattr(module, "lora_dropout", None)
        if isinstance(branch, torch.nn.Module):
            skip.update(id(m) for m in branch.modules())
    return [
        n for n, m in model.named_modules()
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.training and m.p > 0
        and id(m) not in skip
    ]


def _hooks(tap: LayerTap) -> tuple[Any, Any]:
    """(forward pre-hook, forward hook) of one layer."""  # numpydoc ignore=PR01,RT01

    def pre(module: Any, args: tuple[Any, ...]) -> Any:
        x = args[0] if args else None
        # A first layer fed a tensor without a graph: an alias that requires grad lets
        # backward reach its output (nothing upstream has a graph to lose).
        if isinstance(x, torch.Tensor) and torch.is_grad_enabled() and not x.requires_grad \
                and x.is_floating_point():
            return (x.detach().requires_grad_(True), *args[1:])
        return None

    def post(module: Any, args: tuple[Any, ...], out: Any) -> None:
        if not (isinstance(out, torch.Tensor) and out.requires_grad and tap.X is not None):
            return  # no graph (e.g. the no-grad first pass of reentrant checkpointing)
        held = [args[0]]

        def fold(delta: torch.Tensor) -> None:
            # the graph keeps this hook until the loss is released: drop the input now
            if held:
                tap.add(held.pop(), delta)

        out.register_hook(fold)

    return pre, post


@contextmanager
def tapped(model: torch.nn.Module, taps: list[LayerTap]) -> Iterator[None]:
    """Every parameter frozen, hooks on every tap and on the input embeddings; undone after."""  # numpydoc ignore=PR01,YI01
    flags = [(p, p.requires_grad) for p in model.parameters()]
    handles, idle = [], []
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for tap in taps:  # a branch that adds exactly zero is not run (memory and time)
            if _zero_lora_branch(tap.wrapper):
                tap.wrapper._disable_adapters = True
                idle.append(tap.wrapper)
        for tap in taps:
            pre, post = _hooks(tap)
            handles.append(tap.module.register_forward_pre_hook(pre))
            handles.append(tap.module.register_forward_hook(post))
        emb = _input_embeddings(model)
        if emb is not None:  # as transformers' enable_input_require_grads
            handles.append(emb.register_forward_hook(_require_grad))
        yield
    finally:
        for h in handles:
            h.remove()
        for layer in idle:
            layer._disable_adapters = False
        for p, flag in flags:
            p.requires_grad_(flag)


def _zero_lora_branch(layer: Any) -> bool:
    """Whether a PEFT LoRA layer's adapters all add exactly zero (every ``lora_B`` is 0).

    Then the layer computes its base layer's output, whose input and output gradient are
    the same with or without the branch, and the branch can be switched off (PEFT's own
    disable flag) for the estimation. Merged layers, adapter variants (DoRA and others,
    which rescale the base output) and empty (sharded) factors are left alone.
    """  # numpydoc ignore=PR01,RT01
    if layer is None or getattr(layer, "_disable_adapters", None) is not False \
            or getattr(layer, "merged", True) is not False:
        return False
    lora_b = getattr(layer, "lora_B", None)
    if not isinstance(lora_b, torch.nn.ModuleDict) or not len(lora_b) \
            or getattr(layer, "lora_variant", None) or any(getattr(layer, "use_dora", {}).values()):
        return False
    params = [p for b in lora_b.values() for p in b.parameters()]
    return bool(params) and all(p.numel() and not p.is_meta and not torch.count_nonzero(p)
                                for p in params)


def _require_grad(module: Any, args: Any, out: Any) -> None:
    """Make the embedding output require grad (backward then flows into every layer)."""  # numpydoc ignore=PR01
    if isinstance(out, torch.Tensor) and torch.is_grad_enabled() and out.is_floating_point() \
            and not out.requires_grad:
        out.requires_grad_(True)


def _input_embeddings(model: torch.nn.Module) -> torch.nn.Module | None:
    """``model.get_input_embeddings()`` where a (transformers) model has one."""  # numpydoc ignore=PR01,RT01
    embed = getattr(model, "get_input_embeddings", None)
    try:
        emb = embed() if callable(embed) else None
    except (NotImplementedError, AttributeError):
        return None
    return emb if isinstance(emb, torch.nn.Module) else None
