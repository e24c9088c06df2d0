"""Matrix-free gradient SVD: the top triplets of each layer's mean gradient from hooks.

The sweeps drive the backend-agnostic two-sided block Krylov sketch
(``lowrank._agnostic._grad_sketch``); the hooks (``_grad_svd_hooks``) supply its
products. docs/theory/gradient_sketch.md has the derivation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from .._agnostic._grad_sketch import N_TEST, LayerSketch, run_sweeps
from .._lib import _compat
from .._lib._random import Random
from .._lib._validation import check_bool, check_int
from ._grad_svd_hooks import LayerTap, dropout_modules, tapped, target_layers
from ._grad_svd_types import GradientSVD
from ._lora_ga import _check_batches, _progress_bar, batch_loss
from ._lora_ga_dist import distributed, unwrap

__all__ = ["GradientSVD", "estimate_gradient_svd"]


def estimate_gradient_svd(
    model: torch.nn.Module,
    batches: Iterable[Any],
    rank: int,
    *,
    n_sweeps: int | None = None,
    block_size: int | None = None,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor] | None = None,
    targets: Iterable[Any] | None = None,
    rng: Any = None,
    progress: bool = True,
) -> dict[str, GradientSVD]:
    """Top singular triplets of each target layer's mean gradient, never forming it.

    For a linear layer ``y = x Wᵀ + b`` the mean gradient over the batches is
    ``G = (1/N) Σ_t δ_t x_tᵀ`` (tokens ``t``, output gradients ``δ``), so the products

        G X = (1/N) Σ_t δ_t (x_tᵀ X)        Gᵀ Y = (1/N) Σ_t x_t (δ_tᵀ Y)

    follow from a forward hook (``x``) and a hook on the layer's output (``δ``) at
    ``O((m + n) ℓ)`` per token. One *sweep* is one forward and backward per batch and
    gives both products for every target layer at once; a two-sided block Krylov SVD
    (both sides started in the first sweep) needs `n_sweeps` of them. No weight
    gradient is computed: every parameter is frozen during the estimation (its
    ``requires_grad`` restored after) and backward flows through activations only (the
    input embeddings' output, or a first layer's input, is made to require grad).

    Memory per layer: the basis and its image, ``(m + n) · n_sweeps · block_size``
    numbers (each sweep's products accumulate into them in place), plus
    ``min(m, n) · 8`` for the error probes' images; no ``m x n`` buffer (a full gradient
    is ``m · n``). The layer's input is held from its forward until its backward (as
    ordinary training does). A PEFT LoRA branch whose ``lora_B`` factors are all zero
    adds exactly zero, so it is switched off during the estimation (same gradients,
    less memory and time). Gradient checkpointing works (reentrant checkpointing needs
    input embeddings, which are made to require grad, or inputs that do).

    The gradient must be the same at every sweep: a model in train mode with active
    dropout is refused, and the loss summed over the batches must repeat, to
    ``64 eps Σ|loss|``, from sweep to sweep (random masking, augmentation or a
    one-shot iterator are refused too). `batches` is iterated once per sweep; its
    order may change (the sums do not depend on it). Modules keep their train/eval
    mode. A ``DistributedDataParallel`` wrapper is unwrapped and, in an initialised
    process group, the ``(m + n) ℓ`` products, the batch count and the loss sum are
    all-reduced after every sweep, so every rank (with the same `rng`) returns the
    same estimate of the mean over all ranks' batches.

    Parameters
    ----------
    model : torch.nn.Module
        The model (plain, PEFT-wrapped, DDP-wrapped).
    batches : iterable
        Re-iterable batches (a list, a DataLoader); each is passed to `loss_fn`.
    rank : int
        Number of leading triplets per layer, at least 1 (capped at a layer's
        ``min(out, in)``, where the gap is then ``inf``). For LoRA-GA with LoRA rank
        ``r`` pass ``2 r``.
    n_sweeps : int, optional
        Sweeps over `batches`, at least 1. Default 4.
    block_size : int, optional
        Columns ``ℓ`` of each product, at least 1; ``n_sweeps * block_size >= rank``.
        Default ``max(16, rank)``.
    loss_fn : callable, optional
        ``loss_fn(model, batch) -> scalar tensor``; default as in `estimate_gradients`.
    targets : iterable, optional
        Module names, parameter names, modules or parameters. Default: the base layers
        of the model's PEFT LoRA layers, else every ``nn.Linear``/``Conv1D``. Any
        module applying one linear map to its input's last axis can be named, also
        one without a float weight (a quantized linear layer): it needs
        ``in_features``/``out_features`` or a 2-D weight.
    rng : None, int or torch.Generator, optional
        Seed of the random starting blocks (same seed, same estimate).
    progress : bool, default: True
        Show a tqdm progress bar per sweep (if tqdm is installed).

    Returns
    -------
    dict of str to GradientSVD
        ``"<module>.weight"`` -> the triplets (float32, float64 for float64 layers) of
        the mean gradient in the weight's layout (``(in, out)`` for ``Conv1D``, else
        ``(out, in)``), for every target a backward reached.

    Raises
    ------
    ValueError
        If `batches` is empty or a one-shot iterator, the loss changed between sweeps,
        active dropout is found, an option is out of range, or a target is unknown.
    TypeError
        If an option is not an integer or a target is not a linear layer.
    RuntimeError
        If no backward reaches any target.

    Warns
    -----
    UserWarning
        If some targets received no gradient (named; they are left out).

    Notes
    -----
    Accuracy and the diagnostics (``error_estimate``, ``energy_captured``, ``gap``) are
    discussed in the documentation page "Gradient sketches"; ``error_estimate`` is an
    unbiased estimate of the squared relative error from 8 hidden Gaussian probes
    (never below the Krylov space's own tail), and ``gap`` the Ritz ratio, which
    converges from either side.

    Examples
    --------
    >>> import torch
    >>> from lowrank.torch import estimate_gradient_svd
    >>> net = torch.nn.Sequential(torch.nn.Linear(32, 24), torch.nn.Linear(24, 1))
    >>> data = [torch.randn(8, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    >>> svd = estimate_gradient_svd(net, data, 2, loss_fn=lambda m, x: m(x).square().mean(),
    ...                             rng=0, progress=False)
    >>> sorted(svd), tuple(svd["0.weight"].U.shape), svd["0.weight"].n_sweeps
    (['0.weight', '1.weight'], (24, 2), 4)
    >>> tuple(svd["1.weight"].S.shape)  # a 1 x 24 layer has one singular value
    (1,)
    """
    model = unwrap(model)
    rank = check_int(rank, "rank", low=1)
    n_sweeps = check_int(4 if n_sweeps is None else n_sweeps, "n_sweeps", low=1)
    block = check_int(max(16, rank) if block_size is None else block_size, "block_size", low=1)
    if n_sweeps * block < rank:
        msg = f"`n_sweeps * block_size` must be >= rank = {rank}; got {n_sweeps} * {block}"
        raise ValueError(msg)
    check_bool(progress, "progress")
    taps = target_layers(model, targets)
    _check_batches_reusable(batches)
    active = dropout_modules(model)
    if active:
        msg = (
            f"{len(active)} dropout module(s) with p > 0 are in train mode ({active[:3]}"
            f"{' ...' if len(active) > 3 else ''}): the gradient would change at every "
            "sweep. Call model.eval() (or set their p to 0) before the estimation"
        )
        raise ValueError(msg)
    rands = {}
    sketches = []
    for tap in taps:
        key = str(tap.device)
        if key not in rands:
            rands[key] = Random(rng, _xp(tap), tap.device)
        sketches.append(LayerSketch(tap.shape, block, n_sweeps, min(N_TEST, tap.shape[1]),
                                    rands[key], tap.dtype, _xp(tap)))
    sweeper = _Sweeper(model, taps, sketches, batches, loss_fn, progress)
    with tapped(model, taps):
        run_sweeps(sweeper, sketches, n_sweeps)
    missed = [t.name for t in taps if not t.hit]
    if missed:
        msg = (f"no gradient reached {len(missed)} target layer(s) ({missed[:5]}): the loss "
               "does not depend on them; they are left out of the result")
        warnings.warn(msg, UserWarning, stacklevel=2)
    del sweeper
    out = {}
    for tap in taps:  # each layer's buffers go as soon as its triplets exist
        sketch = sketches.pop(0)
        if tap.hit:
            out[tap.name] = _layout(tap, GradientSVD(*sketch.result(min(rank, *tap.shape))))
        del sketch
    return out


def _layout(tap: LayerTap, res: GradientSVD) -> GradientSVD:
    """The result in the weight's own layout (a Conv1D weight is stored (in, out))."""  # numpydoc ignore=PR01,RT01
    return res.T if tap.transposed else res


def _xp(tap: LayerTap) -> Any:
    """The array-API namespace of torch tensors."""  # numpydoc ignore=PR01,RT01
    return _compat.array_namespace(torch.empty(0, dtype=tap.dtype))


def _check_batches_reusable(batches: Any) -> None:
    """Every sweep iterates `batches` again: refuse one-shot iterators."""  # numpydoc ignore=PR01
    if isinstance(batches, Iterator) or iter(batches) is batches:
        msg = (
            "`batches` must be re-iterable (a list or a DataLoader): it is iterated once "
            f"per sweep; got a one-shot {type(batches).__name__}"
        )
        raise ValueError(msg)


class _Sweeper:
    """The products oracle: one forward+backward per batch feeds every layer's products."""  # numpydoc ignore=PR01

    def __init__(self, model: Any, taps: list[LayerTap], sketches: list[LayerSketch],
                 batches: Any, loss_fn: Any, progress: bool) -> None:
        self.model, self.taps, self.sketches, self.batches = model, taps, sketches, batches
        self.loss_fn, self.progress = loss_fn, progress
        self.first: tuple[int, float, float] | None = None
        self.sweep = 0

    def __call__(self, Xs: list[Any], Ys: list[Any]) -> tuple[list[Any], list[Any]]:
        for tap, sketch, X, Y in zip(self.taps, self.sketches, Xs, Ys, strict=True):
            tap.start_sweep(X, Y, *sketch.outputs())  # products accumulate in place
        count, total, size = self._run()
        if distributed():
            count, total, size = _all_reduce(self.taps, count, total, size)
        _check_batches(count)
        self._check_repeat(count, total, size)
        for tap in self.taps:
            tap.GX.div_(count)
            tap.GtY.div_(count)
        self.sweep += 1
        GX = [t.GX for t in self.taps]
        GtY = [t.GtY for t in self.taps]
        for tap in self.taps:
            tap.X = tap.Y = tap.GX = tap.GtY = None
        return GX, GtY

    def _run(self) -> tuple[int, float, float]:
        """Forward+backward over the batches; (count, loss sum, Σ|loss|)."""  # numpydoc ignore=RT01
        count, total, size = 0, 0.0, 0.0
        with torch.enable_grad():
            for batch in _progress_bar(self.batches, self.progress):
                loss = batch_loss(self.model, batch, self.loss_fn, "layers")
                loss.backward()
                value, dtype = float(loss.detach()), loss.dtype
                del loss  # the graph (and what its hooks hold) must not meet the next batch's
                count, total, size = count + 1, total + value, size + abs(value)
        self.eps = float(torch.finfo(dtype).eps) if count else 0.0
        return count, total, size

    def _check_repeat(self, count: int, total: float, size: float) -> None:
        """The same batches and the same loss at every sweep (to rounding)."""  # numpydoc ignore=PR01
        if self.first is None:
            self.first = (count, total, size)
            if not any(t.hit for t in self.taps):
                msg = (f"no gradient reached any target layer in {count} batch(es); with "
                       "reentrant gradient checkpointing inputs must require grad")
                raise RuntimeError(msg)
            return
        count0, total0, size0 = self.first
        tol = 64 * getattr(self, "eps", 0.0) * max(size, size0)
        if count != count0 or not abs(total - total0) <= tol:
            msg = (
                f"sweep {self.sweep + 1} saw {count} batch(es) with loss sum {total!r}; sweep 1 "
                f"saw {count0} with {total0!r} (tolerance {tol:.3g}): the gradient must be the "
                "same at every sweep (no dropout, random masking or augmentation, the same "
                "batches)"
            )
            raise ValueError(msg)


def _all_reduce(
    taps: list[LayerTap], count: int, total: float, size: float
) -> tuple[int, float, float]:
    """Sum the products, batch counts, loss sums and hits over all ranks."""  # numpydoc ignore=PR01,RT01
    dist = torch.distributed
    device = taps[0].GX.device
    stats = torch.tensor([count, total, size, *(float(t.hit) for t in taps)],
                         dtype=torch.float64, device=device)
    dist.all_reduce(stats)
    for tap in taps:
        _all_reduce_(tap.GX)
        _all_reduce_(tap.GtY)
    for tap, hit in zip(taps, stats[3:].tolist(), strict=True):
        tap.hit = hit > 0
    return int(stats[0].item()), float(stats[1].item()), float(stats[2].item())


def _all_reduce_(t: torch.Tensor) -> None:
    """Sum `t` over all ranks in place (a transposed view is reduced through its base)."""  # numpydoc ignore=PR01
    dist = torch.distributed
    flat = t if t.is_contiguous() else t.T
    if flat.is_contiguous():
        dist.all_reduce(flat)
        return
    tmp = t.contiguous()
    dist.all_reduce(tmp)
    t.copy_(tmp)
