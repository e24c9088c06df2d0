"""LoRA-GA for PyTorch/PEFT models: streaming gradient estimation and in-place initialisation.

The maths is ``lowrank.lora_ga_init`` (array API, called on tensors); this module finds
layers, streams gradients and applies the factors and the base-weight offset.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from ._layers import find_lora_pairs
from ._lora_ga_checks import find_ties
from ._lora_ga_dist import all_reduce_sums, distributed, is_sharded, unwrap
from ._lora_ga_fold import folding_forwards
from ._lora_ga_init import LoraGALayerInfo, lora_ga_init_
from ._lora_ga_io import (
    LoraGAInitial,
    apply_lora_ga_offset_,
    export_lora_adapter,
    load_lora_ga_init,
    save_lora_ga_init,
)
from ._lora_ga_targets import forward, target_parameters

__all__ = [
    "LoraGAInitial",
    "LoraGALayerInfo",
    "apply_lora_ga_offset_",
    "estimate_gradients",
    "export_lora_adapter",
    "load_lora_ga_init",
    "lora_ga_init_",
    "save_lora_ga_init",
]


def estimate_gradients(
    model: torch.nn.Module,
    batches: Iterable[Any],
    *,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor] | None = None,
    targets: Iterable[Any] | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Average gradient of the loss with respect to each target weight, streamed.

    One accumulator per target, and no other gradient-sized buffer: while the batches
    run, an ``nn.Linear`` or transformers ``Conv1D`` layer whose weight is a target has
    a forward whose backward adds ``grad_outᵀ x`` to the accumulator in place (one GEMM;
    the first batch's product becomes the accumulator), so autograd never forms that
    weight's ``.grad``. Any other use of a target (a functional use, another kind of
    layer, autocast, FSDP2 shards) goes through autograd, and a
    ``register_post_accumulate_grad_hook`` folds its ``.grad`` in and frees it at once.
    The peak is thus the accumulators plus the backward's activations, below PEFT's own
    estimation, which also holds the gradient being formed on top of the ones summed in
    ``.grad``. Only the returned accumulators stay allocated. A target that no backward
    reaches (a layer the loss does not use, such as an unused pooler) gets no gradient
    and no buffer: it is left out of the result and a ``UserWarning`` names it (`lora_ga_init_` then leaves that layer as it is). Other
    parameters are frozen during estimation; every ``requires_grad`` flag, the targets'
    existing ``.grad`` and every module's train/eval mode are restored afterwards
    (batches run in train mode). Batches are counted here (not hook calls), so modules
    used twice per forward are handled. Works with gradient checkpointing
    (non-reentrant, or reentrant with inputs that require grad). A plain
    LoRA branch with ``B = 0`` (PEFT's default init) adds exact zeros to the outputs and
    gradients, so it is bypassed during estimation (it would only add temporaries).

    Shared weights: by default the targets are the base weights of the LoRA layers; one
    shared with another module (a LoRA layer on ``lm_head``/the MLM decoder, tied to
    the input embeddings) gets the gradient through that layer alone, keyed by the
    layer's own parameter name, which is what its adapter sees (`lora_ga_init_` still
    refuses the tie unless ``untie=True``). Explicit `targets` get the gradient of the
    tensor itself, all its uses summed.

    Distributed data parallel: a ``DistributedDataParallel`` wrapper is unwrapped (its
    own gradient all-reduce is bypassed) and, in an initialised process group, the
    per-rank sums and batch counts are all-reduced once at the end, so every rank
    returns the mean over all ranks' batches (each rank passes its own shard). Every
    rank must call this with the same targets. Under FSDP2 (``fully_shard``, every rank
    running the same number of batches) the targets' reduce-scattered gradient shards
    are accumulated and all-gathered at the end: the result is the full mean gradient,
    the same on every rank (FSDP2's default mean reduction over ranks is assumed; a
    custom gradient divide factor would scale it). `lora_ga_init_` refuses sharded
    layers: initialise the unsharded model, then shard it.

    Parameters
    ----------
    model : torch.nn.Module
        The model (a PEFT model or a plain one).
    batches : iterable
        Batches; each is passed to `loss_fn`.
    loss_fn : callable, optional
        ``loss_fn(model, batch) -> scalar tensor``. Default: call the model with the
        batch (``model(**batch)`` for a mapping, ``model(*batch)`` for a tuple/list,
        else ``model(batch)``) and use ``output.loss`` or a scalar output.
    targets : iterable of str or torch.nn.Parameter, optional
        Module or parameter names, or parameters. Default: the base weights of the
        model's PEFT LoRA layers; without LoRA layers every ``nn.Linear``/``Conv1D``
        weight.
    dtype : torch.dtype, default: torch.float32
        Accumulator dtype.
    progress : bool, default: True
        Show a tqdm progress bar (if tqdm is installed).

    Returns
    -------
    dict of str to torch.Tensor
        Parameter name -> mean gradient, in the parameter's own layout, for every target
        that received a gradient.

    Raises
    ------
    ValueError
        If `batches` is empty (over all ranks) or a target name is unknown.
    TypeError
        If a target weight is quantized or not floating (no gradient can be formed).
    RuntimeError
        If no gradient reaches any target (e.g. a loss without a graph).

    Warns
    -----
    UserWarning
        If some targets received no gradient (named; they are not returned).

    Examples
    --------
    >>> import torch
    >>> from lowrank.torch import estimate_gradients
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    >>> data = [torch.ones(2, 4)] * 3
    >>> grads = estimate_gradients(net, data, loss_fn=lambda m, x: m(x).sum(), progress=False)
    >>> sorted(grads), tuple(grads["0.weight"].shape)
    (['0.weight', '1.weight'], (3, 4))
    """
    model = unwrap(model)
    params = target_parameters(model, targets)
    with _estimation_state(model, params, per_use=targets is None) as leaves:
        accum: dict[str, torch.Tensor | None] = dict.fromkeys(leaves)
        hooks = [
            p.register_post_accumulate_grad_hook(_folder(accum, name, dtype))
            for name, p in leaves.items()
        ]
        try:
            with folding_forwards(model, leaves, accum, dtype):
                n_batches = _run_batches(model, batches, loss_fn, progress, distributed())
        finally:
            for h in hooks:
                h.remove()
    del hooks  # their closures hold `accum`: nothing but the result may outlive the call
    if distributed():
        shapes = {n: (tuple(p.shape), p.device) for n, p in leaves.items()}
        sums, n_batches = all_reduce_sums(accum, shapes, dtype, n_batches)
        _check_batches(n_batches)
        if not sums:  # no rank's backward reached any target
            _check_hits(dict.fromkeys(accum), n_batches)
    else:
        _check_hits(accum, n_batches)
        sums = {n: a for n, a in accum.items() if a is not None}
    del leaves
    _warn_missed([n for n, a in accum.items() if a is None and n not in sums])
    del accum
    for acc in sums.values():
        acc.div_(n_batches)
    return sums


@contextlib.contextmanager
def _estimation_state(
    model: torch.nn.Module, params: dict[str, torch.nn.Parameter], per_use: bool
) -> Iterator[dict[str, torch.nn.Parameter]]:
    """Only the targets require grad; their ``.grad``, every flag and mode come back after.

    A LoRA layer's base weight shared with another module (tied embeddings) is swapped,
    for the estimation only, for a leaf that shares its storage, so its gradient is the
    one through that layer alone (what the layer's adapter sees).
    """  # numpydoc ignore=PR01,YI01
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad) for p in params.values()]
    swaps = _per_use_leaves(model, params) if per_use else []
    bypassed = _zero_branches(model)
    leaves = dict(params)
    try:
        for layer in bypassed:
            layer._disable_adapters = True
        for p, _ in flags:
            p.requires_grad_(False)
        for base, _, leaf, name, old_name in swaps:
            leaves.pop(old_name, None)
            base.weight = leaf
            leaves[name] = leaf
        for p in leaves.values():
            p.grad = None
            p.requires_grad_(True)
        model.train()
        yield leaves
    finally:
        for layer in bypassed:
            layer._disable_adapters = False
        for base, original, _, _, _ in swaps:
            base.weight = original
        for p, flag in flags:
            p.requires_grad_(flag)
        for p, g in grads:
            p.grad = g
        for m, mode in modes:
            m.training = mode


def _zero_branches(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Enabled, unmerged LoRA layers whose active adapters are plain LoRA with ``B = 0``.

    Such a branch adds exact zeros to the output and to the input's gradient, so running
    the base layer alone gives the same gradients without the branch's temporaries
    (PEFT's own LoRA-GA estimates on the unwrapped model for the same reason).
    """  # numpydoc ignore=PR01,RT01
    layers = []
    for module in {id(p.module): p.module for p in find_lora_pairs(model)}.values():
        if getattr(module, "_disable_adapters", True) or getattr(module, "merged_adapters", 1):
            continue
        active = [a for a in getattr(module, "active_adapters", ()) if a in module.lora_B]
        variants = getattr(module, "lora_variant", {})
        dora = getattr(module, "use_dora", {})  # PEFT versions before lora_variant
        plain = all(a not in variants and not dora.get(a) for a in active)
        if active and plain and all(_is_zero(module.lora_B[a]) for a in active):
            layers.append(module)
    return layers


def _is_zero(layer: torch.nn.Module) -> bool:
    """True when every parameter of `layer` (weight, bias) is exactly zero.

    FSDP2 shards count as nonzero: a rank sees only its shard, and every rank must
    take the same branch.
    """  # numpydoc ignore=PR01,RT01
    params = list(layer.parameters())
    return not any(map(is_sharded, params)) and all(not bool(p.detach().any()) for p in params)


def _per_use_leaves(model: torch.nn.Module, params: dict[str, torch.nn.Parameter]) -> list[Any]:
    """(base layer, shared weight, storage-sharing leaf, own name, old name) per tied LoRA base."""  # numpydoc ignore=PR01,RT01
    pairs = find_lora_pairs(model)
    ties = find_ties(model, pairs)
    if not ties:
        return []
    names = {id(m): n for n, m in model.named_modules()}
    by_param = {id(p): n for n, p in params.items()}
    swaps, done = [], set()
    for pair in pairs:
        base = getattr(pair.module, "base_layer", pair.module)
        if pair.name not in ties or id(base) in done:
            continue
        done.add(id(base))
        leaf = torch.nn.Parameter(pair.weight.detach(), requires_grad=False)
        own = f"{names[id(base)]}.weight"
        swaps.append((base, pair.weight, leaf, own, by_param.get(id(pair.weight), own)))
    return swaps


def _folder(
    accum: dict[str, torch.Tensor | None], name: str, dtype: torch.dtype
) -> Callable[[Any], None]:
    """Hook folding ``p.grad`` into ``accum[name]`` (in `dtype`) and freeing it.

    The first gradient becomes the accumulator itself when it has the accumulator's
    dtype, so no zero-filled buffer is allocated up front.
    """  # numpydoc ignore=PR01,RT01

    def hook(p: torch.Tensor) -> None:
        g = p.grad
        if g is None:  # a folding forward already summed this use (it gives autograd none)
            return
        p.grad = None
        acc = accum[name]
        if acc is None:
            accum[name] = g.detach() if g.dtype == dtype else g.detach().to(dtype)
        else:
            acc.add_(g)

    return hook


def _run_batches(
    model: Any, batches: Iterable[Any], loss_fn: Any, progress: bool, allow_empty: bool
) -> int:
    """Forward + backward over every batch; return how many batches ran."""  # numpydoc ignore=PR01,RT01
    n = 0
    with torch.enable_grad():
        for batch in _progress_bar(batches, progress):
            batch_loss(model, batch, loss_fn, "weights").backward()
            n += 1
    if not allow_empty:
        _check_batches(n)
    return n


def _check_batches(n: int) -> None:
    """Raise if no batch ran (on this rank, or over all ranks)."""  # numpydoc ignore=PR01
    if n == 0:
        msg = "`batches` is empty: at least one batch is needed to estimate gradients"
        raise ValueError(msg)


def _progress_bar(batches: Iterable[Any], progress: bool) -> Iterable[Any]:
    """Wrap ``batches`` in tqdm when asked and available."""  # numpydoc ignore=PR01,RT01
    if not progress:
        return batches
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return batches
    total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
    return tqdm(batches, total=total, desc="LoRA-GA gradients", unit="batch")


def batch_loss(model: Any, batch: Any, loss_fn: Any, targets: str) -> torch.Tensor:
    """The loss of one batch, refused unless a scalar with a graph to the targets."""  # numpydoc ignore=PR01,RT01
    loss = loss_fn(model, batch) if loss_fn is not None else forward(model, batch, True)
    if not (isinstance(loss, torch.Tensor) and loss.ndim == 0 and loss.requires_grad):
        msg = (
            f"the loss must be a scalar tensor that depends on the target {targets} "
            "(with reentrant gradient checkpointing, inputs must require grad)"
        )
        raise RuntimeError(msg)
    return loss


def _warn_missed(missed: list[str]) -> None:
    """Warn, by name, about targets that no backward reached (they are left out)."""  # numpydoc ignore=PR01
    if missed:
        shown = ", ".join(repr(n) for n in missed[:5])
        more = f" and {len(missed) - 5} more" if len(missed) > 5 else ""
        msg = (
            f"no gradient reached {len(missed)} target weight(s) ({shown}{more}): the loss "
            "does not depend on them, so they are left out of the result (no zero "
            "gradient is returned); leave them out of `targets`/target_modules"
        )
        warnings.warn(msg, UserWarning, stacklevel=3)


def _check_hits(accum: dict[str, Any], n_batches: int) -> None:
    """Raise if no target ever received a gradient (with batches to run)."""  # numpydoc ignore=PR01
    if n_batches and all(a is None for a in accum.values()):
        msg = (
            f"no gradient reached any target weight in {n_batches} batch(es); with "
            "reentrant gradient checkpointing call model.enable_input_require_grads() "
            "or use use_reentrant=False"
        )
        raise RuntimeError(msg)
