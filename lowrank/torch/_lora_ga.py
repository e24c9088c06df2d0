"""LoRA-GA for PyTorch/PEFT models: streaming gradient estimation and in-place initialisation.

The maths is ``lowrank.lora_ga_init`` (array API, called on tensors); this module finds
layers, streams gradients and applies the factors and the base-weight offset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from .._lora_ga import lora_ga_init
from ._layers import LoraPair, find_lora_pairs
from ._lora_ga_io import (
    LoraGAInitial,
    apply_lora_ga_offset_,
    export_lora_adapter,
    load_lora_ga_init,
    save_lora_ga_init,
)
from ._lora_ga_io import subtract_offset_ as _subtract_offset_
from ._lora_ga_targets import forward, grad_for_pair, model_outputs_close, target_parameters

__all__ = [
    "LoraGAInitial",
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

    Every target weight gets one accumulator of `dtype`; a
    ``register_post_accumulate_grad_hook`` folds each backward's ``.grad`` into it and
    frees ``.grad`` at once, so peak extra memory is one accumulator per target (never
    a second copy of all gradients). Other parameters are frozen during estimation and
    restored afterwards. Batches are counted here (not hook calls), so modules used
    twice per forward and tied weights are handled. Works with gradient checkpointing
    (non-reentrant, or reentrant with inputs that require grad).

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
        Parameter name -> mean gradient, in the parameter's own layout.

    Raises
    ------
    ValueError
        If `batches` is empty or a target name is unknown.
    RuntimeError
        If no gradient reaches any target (e.g. a loss without a graph).

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
    params = target_parameters(model, targets)
    accum = {name: torch.zeros_like(p, dtype=dtype) for name, p in params.items()}
    hits = dict.fromkeys(params, 0)
    saved = {id(p): (p, p.requires_grad) for p in model.parameters()}
    hooks = []
    try:
        for p, _ in saved.values():
            p.requires_grad_(False)
        for name, p in params.items():
            p.grad = None
            p.requires_grad_(True)
            hooks.append(p.register_post_accumulate_grad_hook(_folder(accum[name], hits, name)))
        n_batches = _run_batches(model, batches, loss_fn, progress)
    finally:
        for h in hooks:
            h.remove()
        for p, flag in saved.values():
            p.requires_grad_(flag)
    _check_hits(hits, n_batches)
    for acc in accum.values():
        acc.div_(n_batches)
    return accum


def _folder(acc: torch.Tensor, hits: dict[str, int], name: str) -> Callable[[Any], None]:
    """Hook folding ``p.grad`` into ``acc`` (in its dtype) and freeing it."""  # numpydoc ignore=PR01,RT01

    def hook(p: torch.Tensor) -> None:
        acc.add_(p.grad)
        p.grad = None
        hits[name] += 1

    return hook


def _run_batches(model: Any, batches: Iterable[Any], loss_fn: Any, progress: bool) -> int:
    """Forward + backward over every batch; return how many batches ran."""  # numpydoc ignore=PR01,RT01
    was_training = model.training
    model.train()
    n = 0
    try:
        with torch.enable_grad():
            for batch in _progress_bar(batches, progress):
                loss = loss_fn(model, batch) if loss_fn is not None else forward(model, batch, True)
                if not (isinstance(loss, torch.Tensor) and loss.ndim == 0 and loss.requires_grad):
                    msg = (
                        "the loss must be a scalar tensor that depends on the target weights "
                        "(with reentrant gradient checkpointing, inputs must require grad)"
                    )
                    raise RuntimeError(msg)
                loss.backward()
                n += 1
    finally:
        model.train(was_training)
    if n == 0:
        msg = "`batches` is empty: at least one batch is needed to estimate gradients"
        raise ValueError(msg)
    return n


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


def _check_hits(hits: dict[str, int], n_batches: int) -> None:
    """Raise if no target ever received a gradient."""  # numpydoc ignore=PR01
    if not any(hits.values()):
        msg = (
            f"no gradient reached any target weight in {n_batches} batch(es); with "
            "reentrant gradient checkpointing call model.enable_input_require_grads() "
            "or use use_reentrant=False"
        )
        raise RuntimeError(msg)


def lora_ga_init_(
    model: torch.nn.Module | Iterable[tuple[Any, Any, Any, float]],
    grads: Mapping[str, torch.Tensor] | Iterable[torch.Tensor],
    *,
    rank: int | None = None,
    adapter: str | None = None,
    check_inputs: Any = None,
    rng: Any = 0,
    **options: Any,
) -> dict[str, LoraGAInitial]:
    """Initialise LoRA layers in place from gradients by LoRA-GA.

    For every PEFT LoRA layer of `model` (or every explicit ``(weight, lora_A,
    lora_B, scaling)`` tuple) this computes ``A0, B0 = lowrank.lora_ga_init(G, r,
    scaling=s, ...)`` (batched over layers of equal shape), stores them in the
    adapter's dtype, and replaces the base weight by ``W - s * B0 @ A0`` computed in
    float32 from the stored factors and rounded once. The scaling ``s`` is read from
    the layer (rsLoRA, ``rank_pattern``/``alpha_pattern`` included). Biases are left
    alone; ``Conv1D``/``fan_in_fan_out`` weights are transposed as PEFT does; a weight
    shared by two LoRA layers (tied weights) is rejected.

    Parameters
    ----------
    model : torch.nn.Module or iterable of tuple
        A model with PEFT LoRA layers, or ``(weight, lora_A, lora_B, scaling)`` tuples
        (weight in (out, in) layout; tensors or modules with ``.weight``).
    grads : mapping or iterable of torch.Tensor
        From `estimate_gradients` (keyed by parameter name; names of the base model
        before PEFT wrapping work too), or one gradient per tuple.
    rank : int, optional
        Expected LoRA rank; default: each layer's own.
    adapter : str, optional
        PEFT adapter name; default: the active adapter(s).
    check_inputs : optional
        A batch; the model's outputs on it before and after must agree within the
        dtype tolerance (raises otherwise). Every layer is always checked on its own.
    rng : None, int or torch.Generator, default: 0
        Seed for the randomized SVD and ``direction="random"``.
    **options
        Passed to `lowrank.lora_ga_init`: ``direction``, ``scale``, ``stable_gamma``,
        ``compat``, ``svd``, ``n_oversamples``, ``n_power_iter``, ``norm_clip`` (the
        base weights are passed along for ``scale="weight_svd"`` and ``norm_clip``).

    Returns
    -------
    dict of str to LoraGAInitial
        The stored ``A0``, ``B0`` and scaling per layer, for `save_lora_ga_init`,
        `apply_lora_ga_offset_` and `export_lora_adapter`.

    Raises
    ------
    ValueError
        If a gradient is missing or misshaped, `rank` disagrees with a layer, a weight
        is tied across LoRA layers, or the outputs changed.

    Examples
    --------
    >>> import torch
    >>> from lowrank.torch import lora_ga_init_
    >>> W = torch.nn.Linear(6, 8, bias=False)
    >>> A, B = torch.nn.Parameter(torch.zeros(2, 6)), torch.nn.Parameter(torch.zeros(8, 2))
    >>> G = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    >>> state = lora_ga_init_([(W.weight, A, B, 2.0)], [G], scale="unit")
    >>> bool(torch.allclose(A @ A.T, torch.eye(2), atol=1e-5))
    True
    """
    pairs, glist = _pairs_and_grads(model, grads, adapter)
    _check_pairs(pairs, glist, rank)
    before = model_outputs_close(model, check_inputs, None)
    gen = rng if isinstance(rng, torch.Generator) else _generator(rng)
    state: dict[str, LoraGAInitial] = {}
    for chunk in _groups(pairs, glist):
        stack = torch.stack([g for _, g in chunk]).float()
        if options.get("scale") in ("weight_svd", "weightS") or options.get("norm_clip"):
            options["weight"] = torch.stack([_weight_oi(p) for p, _ in chunk]).float()
        A0, B0 = lora_ga_init(
            stack, chunk[0][0].A.shape[0], scaling=chunk[0][0].scaling, rng=gen, **options
        )
        for i, (pair, _) in enumerate(chunk):
            state[pair.name] = _subtract_offset_(pair, A0[i], B0[i])
    model_outputs_close(model, check_inputs, before)
    return state


def _weight_oi(pair: LoraPair) -> torch.Tensor:
    """The base weight in (out, in) layout (detached)."""  # numpydoc ignore=PR01,RT01
    w = pair.weight.detach()
    return w.T if pair.fan_in_fan_out else w


def _generator(seed: Any) -> Any:
    """A torch CPU generator from a seed (None: fresh entropy)."""  # numpydoc ignore=PR01,RT01
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


def _pairs_and_grads(
    model: Any, grads: Any, adapter: str | None
) -> tuple[list[LoraPair], list[Any]]:
    """LoRA pairs with their (out, in) gradients."""  # numpydoc ignore=PR01,RT01
    if isinstance(model, torch.nn.Module):
        pairs = find_lora_pairs(model, adapter=adapter)
        if not pairs:
            msg = "`model` has no PEFT LoRA layers (lora_A/lora_B/scaling); nothing to initialise"
            raise ValueError(msg)
        return pairs, [grad_for_pair(model, pair, grads) for pair in pairs]
    pairs = [_explicit_pair(i, t) for i, t in enumerate(model)]
    glist = list(grads.values()) if isinstance(grads, Mapping) else list(grads)
    if len(glist) != len(pairs):
        msg = f"`grads` must hold one gradient per tuple: {len(pairs)} tuples, {len(glist)} grads"
        raise ValueError(msg)
    return pairs, glist


def _explicit_pair(i: int, item: Any) -> LoraPair:
    """LoraPair from a (weight, lora_A, lora_B, scaling) tuple."""  # numpydoc ignore=PR01,RT01
    weight, A, B, scaling = (getattr(t, "weight", t) for t in item)
    return LoraPair(name=f"pair{i}", A=A, B=B, scaling=float(scaling), weight=weight)


def _check_pairs(pairs: list[LoraPair], glist: list[Any], rank: int | None) -> None:
    """Shapes, ranks, and no weight shared between LoRA layers."""  # numpydoc ignore=PR01
    owners: dict[int, str] = {}
    for pair, g in zip(pairs, glist, strict=True):
        r, out, inn = pair.A.shape[0], pair.B.shape[0], pair.A.shape[1]
        if rank is not None and rank != r:
            msg = f"`rank` is {rank} but LoRA layer {pair.name!r} has rank {r}"
            raise ValueError(msg)
        if tuple(g.shape) != (out, inn):
            got = tuple(g.shape)
            msg = f"gradient for {pair.name!r} must have shape (out, in) = {(out, inn)}; got {got}"
            raise ValueError(msg)
        if pair.weight is None:
            msg = f"LoRA layer {pair.name!r} has no base weight to offset"
            raise ValueError(msg)
        other = owners.setdefault(id(pair.weight), pair.name)
        if other != pair.name:
            msg = (
                f"base weight of {pair.name!r} is tied to {other!r}: LoRA-GA would subtract "
                "two different offsets from one tensor; untie the weights or target only one"
            )
            raise ValueError(msg)


def _groups(pairs: list[LoraPair], glist: list[Any]) -> Iterable[list[tuple[LoraPair, Any]]]:
    """Chunks of layers with equal (shape, rank, scaling, device), ~<= 512 MiB each."""  # numpydoc ignore=PR01,RT01
    groups: dict[tuple[Any, ...], list[tuple[LoraPair, Any]]] = {}
    for pair, g in zip(pairs, glist, strict=True):
        key = (tuple(g.shape), pair.A.shape[0], pair.scaling, str(g.device))
        groups.setdefault(key, []).append((pair, g))
    for items in groups.values():
        out, inn = items[0][1].shape
        size = max(1, 2**27 // (out * inn))
        for i in range(0, len(items), size):
            yield items[i : i + size]
