"""In-place LoRA-GA initialisation of PEFT LoRA layers: validate all, write all, or undo.

The maths is ``lowrank.lora_ga_init`` (array API, called on tensors); this module checks
every layer, computes every factor, then writes the adapters and base-weight offsets.
Any failure after the first write restores every touched tensor bit for bit.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .._lib._validation import check_bool
from ._layers import LoraPair, find_lora_pairs, unsupported_lora_layers
from ._grad_svd_init import sketch_factors, stand_ins
from ._lora_ga_checks import (
    check_base_weights,
    check_config_not_initialised,
    check_not_initialised,
    check_option_names,
    check_ranks,
    find_ties,
    mark_config_initialised,
    mark_initialised,
    restore_on_failure,
    untie_,
)
from ._lora_ga_dist import refuse_sharded, unwrap
from ._lora_ga_factors import LoraGALayerInfo, offset_bound, plan_factors
from ._lora_ga_io import LoraGAInitial, subtract_offset_
from ._lora_ga_save import install_lora_ga_saving
from ._lora_ga_targets import grad_for_pair, model_outputs_close

__all__ = ["LoraGALayerInfo", "lora_ga_init_"]


def lora_ga_init_(
    model: torch.nn.Module | Iterable[tuple[Any, Any, Any, float]],
    grads: Mapping[str, torch.Tensor] | Iterable[torch.Tensor],
    *,
    rank: int | None = None,
    adapter: str | None = None,
    check_inputs: Any = None,
    rng: Any = 0,
    untie: bool = False,
    return_info: bool = False,
    **options: Any,
) -> dict[str, LoraGAInitial] | tuple[dict[str, LoraGAInitial], dict[str, LoraGALayerInfo]]:
    """Initialise LoRA layers in place from gradients by LoRA-GA, all or nothing.

    For every PEFT LoRA layer of `model` (or every explicit ``(weight, lora_A,
    lora_B, scaling)`` tuple) this computes ``A0, B0 = lowrank.lora_ga_init(G, r,
    scaling=s, ...)`` (batched over layers of equal shape), stores them in the
    adapter's dtype, and replaces the base weight by ``W - s * B0 @ A0`` computed in
    float32 from the stored factors and rounded once. The scaling ``s`` is read from
    the layer (rsLoRA, ``rank_pattern``/``alpha_pattern`` included). Biases are left
    alone; ``Conv1D``/``fan_in_fan_out`` weights are transposed as PEFT does.

    Every check runs before the first write: option names, ranks (``2 r <= min(out,
    in)``), gradient shapes and finiteness, quantized or non-floating bases, embedding
    or convolution LoRA (refused by name), weights shared with any other module, and
    adapters initialised already (a second init, also after ``merge_adapter()``, on
    an inactive adapter, or on an adapter reloaded from ``save_pretrained``, is
    refused: the base weight already carries an offset) or with a nonzero ``lora_B``
    (trained or loaded: replacing it would change the model). Success is recorded on
    the layers and as ``init_lora_weights="lora_ga"`` (PEFT's own value for LoRA-GA)
    in the adapter's PEFT config. The base weights now differ from the original
    ones, so PEFT's rank-r adapter alone would fit only this modified base: on a PEFT
    model, ``save_pretrained`` (and with it ``Trainer.save_model`` and checkpoints)
    therefore writes the rank-2r export of `export_lora_adapter`, which stock PEFT
    loads on the original base, plus the rank-r adapter and the initial factors under
    lowrank's own file names, which the model's ``load_adapter`` (Trainer's
    ``resume_from_checkpoint``) reads back; both replacements live on the instance
    and survive ``copy.deepcopy`` and pickling. ``save_pretrained(...,
    lowrank_allow_modified_base=True)`` runs PEFT's own saving (the rank-r adapter,
    knowingly); PEFT's ``path_initial_model_for_weight_conversion`` gives the same
    export. A
    failure after the first write (a layer or output check) restores every touched
    tensor exactly; this keeps one copy of the touched tensors during the call. A
    ``DistributedDataParallel`` wrapper is unwrapped; with equal gradients (from
    `estimate_gradients`) and the same `rng`, every rank gets the same init.

    Parameters
    ----------
    model : torch.nn.Module or iterable of tuple
        A model with PEFT LoRA layers, or ``(weight, lora_A, lora_B, scaling)`` tuples
        (weight in (out, in) layout; tensors or modules with ``.weight``).
    grads : mapping or iterable of torch.Tensor
        From `estimate_gradients` (keyed by parameter name; names of the base model
        before PEFT wrapping work too), or one gradient per tuple. Or, in place of
        every gradient, its `GradientSVD` from `estimate_gradient_svd` (estimated with
        ``rank >= 2 r``): the factors then come from its top-2r triplets, and the
        options ``svd``, ``n_oversamples``, ``n_power_iter`` are refused.
    rank : int, optional
        Expected LoRA rank; default: each layer's own.
    adapter : str, optional
        PEFT adapter name; default: the active adapter(s).
    check_inputs : optional
        A batch; the model's outputs on it before and after must agree (raises and
        restores otherwise). Float32/float64 models: within 64 eps of the output
        scale times ``1 + max|s B0 A0| / max|W|`` (the residual weight's rounding
        grows with the offset). bf16/fp16 models: the change of the model's function (run with its
        tensors in float32, before and after) must stay within the model's own
        rounding error (its low-precision outputs against its float32 outputs); the
        check holds a float32 copy of the low-precision tensors while it runs. Every
        layer is always checked on its own.
    rng : None, int or torch.Generator, default: 0
        Seed for the randomized SVD and ``direction="random"``.
    untie : bool, default: False
        A LoRA layer whose base weight is shared with another module (tied input and
        output embeddings) is refused unless this is True; then that layer gets its
        own copy of the weight (the tie is broken, the other users keep the original,
        the copy costs one weight of memory). Its gradient must be the one through
        that layer alone, which is what `estimate_gradients` returns for it.
    return_info : bool, default: False
        Also return a `LoraGALayerInfo` per layer (spectral gaps, captured energy,
        offset size).
    **options
        Passed to `lowrank.lora_ga_init`: ``direction``, ``scale``, ``stable_gamma``,
        ``compat``, ``svd``, ``n_oversamples``, ``n_power_iter``, with its defaults
        (PEFT's LoRA-GA: ``compat="peft"``, ``scale="stable"``; ``compat="paper"`` for
        the official code, with a 3-10x smaller learning rate than vanilla LoRA's);
        any other name raises ``TypeError``. ``norm_clip`` is applied here, per layer: where the offset's
        largest entry exceeds ``c * max|W|``, both factors are multiplied by
        ``sqrt(c max|W| / max|s B0 A0|)``. ``True``: c = 1 (the official code's
        ``norm_clip``); a positive number: that c; ``False``: never. Default (None):
        c = 1/2 for bf16/fp16 base weights, never for float32/float64. Trade-off: a
        clipped layer's first step is smaller than LoRA-GA's by the same factor, in
        exchange for a residual weight ``W - s B0 A0`` whose rounding to bf16/fp16
        keeps the model's outputs within its own rounding error (measured on
        all-MiniLM-L6-v2 in bf16, r = 8, ``compat="paper"``, whose offsets are
        10³-10⁵x the default's: unclipped offsets reach 2-3x max|W| and move
        the function by 0.9-1.1x that error, c = 1 by 0.9x, c = 1/2 by 0.55x; the bf16
        outputs themselves then differ from the float32 ones by 3x the error before
        the init instead of 4.2-4.6x). A ``UserWarning``
        names low-precision layers whose offset still exceeds their weight.

    Returns
    -------
    dict of str to LoraGAInitial
        The stored ``A0``, ``B0`` and scaling per layer, for `save_lora_ga_init`,
        `apply_lora_ga_offset_` and `export_lora_adapter`. With `return_info`, a
        tuple ``(state, info)`` with ``info`` a dict of layer -> `LoraGALayerInfo`.

    Raises
    ------
    TypeError
        If an option is unknown, or a base weight is quantized or not floating.
    ValueError
        If `grads` has a gradient for none of the layers, a gradient is misshaped or
        not finite, `rank` disagrees with a layer, ``2 r > min(out, in)``, a weight
        is shared (without `untie`), an adapter was initialised already, is merged
        or has a nonzero ``lora_B``, an embedding/convolution LoRA
        layer is targeted, or the outputs changed. The model is then unchanged.

    Warns
    -----
    UserWarning
        If a bf16/fp16 weight gets an offset with a larger largest entry than its own,
        or if `grads` (a mapping) has no gradient for some LoRA layers: those layers
        are named and left as they are (a layer that no backward reaches, such as an
        unused pooler, gets no entry from `estimate_gradients`; with PEFT's default
        ``B = 0`` it keeps the model's function and is not marked as initialised).

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
    check_option_names(options, "lora_ga_init_")
    offset_bound(options.get("norm_clip"), torch.float32)  # validates the value early
    untie = check_bool(untie, "untie")
    return_info = check_bool(return_info, "return_info")
    is_module = isinstance(model, torch.nn.Module)
    if is_module:
        model = unwrap(model)
    pairs, glist = _pairs_and_grads(model, grads, adapter)
    _check_pairs(pairs, stand_ins(glist), rank, check_ids=not is_module)
    ties = _check_ties(model, pairs, untie)
    # gradient SVDs (estimate_gradient_svd) carry the top 2r triplets LoRA-GA needs
    sketched = sketch_factors(pairs, glist, rng, options)
    factors, infos = sketched or plan_factors(pairs, glist, rng, options)
    before = model_outputs_close(model, check_inputs, None)
    with restore_on_failure(pairs):
        pairs = untie_(pairs, ties) if ties else pairs
        state = {p.name: subtract_offset_(p, *factors[p.name]) for p in pairs}
        growth = 1 + max((i.offset_ratio for i in infos.values()), default=0.0)
        model_outputs_close(model, check_inputs, before, growth)
    mark_initialised(pairs)
    mark_config_initialised(model, pairs)
    if is_module:
        install_lora_ga_saving(model, state)
    return (state, infos) if return_info else state


def _pairs_and_grads(
    model: Any, grads: Any, adapter: str | None
) -> tuple[list[LoraPair], list[Any]]:
    """LoRA pairs with their (out, in) gradients."""  # numpydoc ignore=PR01,RT01
    if isinstance(model, torch.nn.Module):
        unsupported = unsupported_lora_layers(model, adapter=adapter)
        if unsupported:
            msg = (
                f"LoRA-GA supports Linear/Conv1D LoRA layers only; {unsupported} are "
                "embedding or convolution LoRA layers: leave them out of target_modules"
            )
            raise ValueError(msg)
        pairs = find_lora_pairs(model, adapter=adapter)
        if not pairs:
            msg = "`model` has no PEFT LoRA layers (lora_A/lora_B/scaling); nothing to initialise"
            raise ValueError(msg)
        refuse_sharded(pairs)
        check_base_weights(pairs)
        check_ranks(pairs)
        check_config_not_initialised(model, pairs)
        check_not_initialised(pairs)
        return _with_gradients(model, pairs, grads)
    pairs = [_explicit_pair(i, t) for i, t in enumerate(model)]
    glist = list(grads.values()) if isinstance(grads, Mapping) else list(grads)
    if len(glist) != len(pairs):
        msg = f"`grads` must hold one gradient per tuple: {len(pairs)} tuples, {len(glist)} grads"
        raise ValueError(msg)
    return pairs, glist


def _with_gradients(
    model: torch.nn.Module, pairs: list[LoraPair], grads: Mapping[str, Any]
) -> tuple[list[LoraPair], list[Any]]:
    """The pairs that `grads` has a gradient for, with it; warn about the others.

    A layer the loss never reaches (an unused pooler) gets no entry from
    `estimate_gradients`; it keeps its current adapter (PEFT's default init: B = 0, no
    offset, the model's function unchanged). No gradient for any layer is an error.
    """  # numpydoc ignore=PR01,RT01
    found = [(pair, grad_for_pair(model, pair, grads, required=False)) for pair in pairs]
    kept = [(pair, g) for pair, g in found if g is not None]
    if not kept:
        grad_for_pair(model, pairs[0], grads)  # raises, naming the keys it looked for
    missing = [pair.name for pair, g in found if g is None]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        msg = (
            f"`grads` has no gradient for {len(missing)} LoRA layer(s) ({shown}{more}); "
            "they are left as they are (not LoRA-GA initialised, no offset): the loss "
            "does not reach them if estimate_gradients warned about them, else check "
            "the keys of `grads`"
        )
        warnings.warn(msg, UserWarning, stacklevel=4)
    return [pair for pair, _ in kept], [g for _, g in kept]


def _explicit_pair(i: int, item: Any) -> LoraPair:
    """LoraPair from a (weight, lora_A, lora_B, scaling) tuple."""  # numpydoc ignore=PR01,RT01
    weight, A, B, scaling = (getattr(t, "weight", t) for t in item)
    return LoraPair(name=f"pair{i}", A=A, B=B, scaling=float(scaling), weight=weight)


def _check_pairs(
    pairs: list[LoraPair], glist: list[Any], rank: int | None, check_ids: bool
) -> None:
    """Shapes, ranks, finite gradients, and (tuples) no weight given twice.

    Finiteness: one sum per gradient (NaN/Inf make it non-finite); only a non-finite
    sum, which overflow can also cause, is checked entry by entry.
    """  # numpydoc ignore=PR01
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
        if not bool(torch.isfinite(g.sum())) and not bool(torch.isfinite(g).all()):
            msg = f"gradient for {pair.name!r} holds NaN or Inf"
            raise ValueError(msg)
        if pair.weight is None:
            msg = f"LoRA layer {pair.name!r} has no base weight to offset"
            raise ValueError(msg)
        other = owners.setdefault(id(pair.weight), pair.name)
        if check_ids and other != pair.name:
            msg = (
                f"base weight of {pair.name!r} is tied to {other!r}: LoRA-GA would subtract "
                "two different offsets from one tensor; untie the weights or target only one"
            )
            raise ValueError(msg)


def _check_ties(model: Any, pairs: list[LoraPair], untie: bool) -> dict[str, list[str]]:
    """Weights shared with any other module: refused by name unless `untie`."""  # numpydoc ignore=PR01,RT01
    ties = find_ties(model, pairs)
    if ties and not untie:
        name, others = next(iter(ties.items()))
        msg = (
            f"the base weight of LoRA layer {name!r} is tied (shared) with {others}"
            f"{f' (and {len(ties) - 1} more tied layer(s))' if len(ties) > 1 else ''}: "
            "LoRA-GA would write its offset into every user of the tensor. Pass "
            "untie=True to give the layer its own copy of the weight, or leave it out "
            "of target_modules"
        )
        raise ValueError(msg)
    return ties
