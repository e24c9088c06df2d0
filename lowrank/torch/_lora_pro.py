"""LoRA-Pro for PyTorch/PEFT models: an AdamW optimizer and an in-place gradient transform."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._lib._validation import check_option
from ._lora_pro_adam import check_hyper
from ._lora_pro_batch import Pair, adjusted_grads, check_damping, compute_dtype, resolve_pairs
from ._lora_pro_step import step_efficient, step_full

__all__ = ["LoRAProAdamW", "lora_pro_adjust_"]

_GAUGES = ("sylvester", "zero", "symmetric")
_META = (
    "parameters on the meta device hold no values; materialise them (e.g. to_empty() and "
    "load the weights) before building the optimizer"
)


@torch.no_grad()
def lora_pro_adjust_(
    model_or_pairs: Any,
    /,
    *,
    gauge: str = "sylvester",
    damping: str | float | None = "auto",
    adapter: str | None = None,
) -> None:
    """Rewrite the LoRA gradients of a model in place with their LoRA-Pro adjustment.

    Call it between ``loss.backward()`` (after the last micro-batch when accumulating)
    and any optimizer's ``step()``; the optimizer then follows the LoRA-Pro direction.

    Parameters
    ----------
    model_or_pairs : torch.nn.Module or iterable of LoraPair or (A, B, scaling)
        A model with PEFT LoRA layers (pairs are found structurally, each with its own
        ``scaling``), or explicit pairs.
    gauge : {"sylvester", "zero", "symmetric"}, default "sylvester"
        See :func:`lowrank.lora_pro_adjust`.
    damping : "auto", float or None, default "auto"
        See :func:`lowrank.lora_pro_adjust`.
    adapter : str, optional
        PEFT adapter name when a model is given (default: the active adapter).

    See Also
    --------
    LoRAProAdamW : AdamW with the adjustment built in (and a weight-space "full" mode).
    lowrank.lora_pro_adjust : The array-API computation.

    Notes
    -----
    Pairs whose gradients are both ``None`` are skipped. Pairs with the same shapes
    are stacked and adjusted by batched products; all pairs of one rank share one
    batched float64 ``eigh``. Gradients are not
    checked for NaN/Inf here (they propagate, as in ``torch.optim``); the adjusted
    gradients are computed in float32 (float64 for float64 parameters) and written
    back in the gradient's dtype.

    Examples
    --------
    >>> import torch
    >>> from lowrank.torch import lora_pro_adjust_
    >>> A = torch.nn.Parameter(torch.randn(2, 6))
    >>> B = torch.nn.Parameter(torch.randn(5, 2))
    >>> x, y = torch.randn(8, 6), torch.randn(8, 5)
    >>> ((x @ (2.0 * B @ A).T - y) ** 2).mean().backward()
    >>> lora_pro_adjust_([(A, B, 2.0)])
    >>> A.grad.shape, B.grad.shape
    (torch.Size([2, 6]), torch.Size([5, 2]))
    """
    check_option(gauge, "gauge", _GAUGES)
    pairs = [p for p in resolve_pairs(model_or_pairs, adapter=adapter) if _has_grad(p)]
    new_A, new_B = adjusted_grads(
        pairs, [p.A.grad for p in pairs], [p.B.grad for p in pairs], gauge=gauge, damping=damping
    )
    for p, gA, gB in zip(pairs, new_A, new_B, strict=True):
        for param, g in ((p.A, gA), (p.B, gB)):
            if param.grad is None:
                param.grad = g.to(param.dtype).clone()
            else:
                param.grad.copy_(g)


def _has_grad(p: Pair) -> bool:
    return p.A.grad is not None or p.B.grad is not None


class LoRAProAdamW(torch.optim.Optimizer):
    r"""AdamW that trains LoRA adapters along the LoRA-Pro direction (LoRA-Pro, arXiv:2407.18242).

    Parameters
    ----------
    params : torch.nn.Module or iterable of parameters or of param-group dicts
        A model (all its trainable parameters, LoRA pairs found structurally) or
        standard param groups (then pass ``pairs=``).
    lr : float, default 1e-3
        Learning rate (per group; LR schedulers work as usual).
    betas : tuple of float, default (0.9, 0.999)
        Adam coefficients.
    eps : float, default 1e-8
        Adam epsilon, added as ``sqrt(v̂) + eps`` (the PyTorch/official-code convention).
    weight_decay : float, default 1e-2
        Decoupled weight decay (AdamW), applied to every optimized parameter (for LoRA
        pairs: to A and B, never to the frozen base weight).
    weight_decay_to : {"init", "zero"}, default "init"
        ``"init"``: LoRA factors decay toward their values when the optimizer was built,
        ``A <- A - lr·wd·(A - A0)`` (and B alike), so the effective weight
        ``W_res + s B A`` decays toward the initial effective weight. After a LoRA-GA
        init (``W_res = W - s B0 A0``) plain decay would pull it toward ``W - s B0 A0``
        instead of the pretrained ``W``. The anchors are kept in the optimizer state
        (saved by ``state_dict``, so a resumed run keeps the original ones; a loaded
        state without anchors keeps this optimizer's).
        ``"zero"``: plain AdamW decay toward 0. Other parameters always decay toward 0.
    mode : {"efficient", "full"}, default "efficient"
        ``"efficient"``: Adam on the adjusted factor gradients, states the size of A and
        B. ``"full"``: Adam in weight space on the equivalent gradient g̃ (the paper),
        two float32 states of shape (out, in) per adapted layer, the update projected
        back onto the factors.
    gauge : {"sylvester", "zero", "symmetric"}, default "sylvester"
        Gauge of the adjustment, see :func:`lowrank.lora_pro_adjust`.
    damping : "auto", float or None, default "auto"
        Damping of the r×r inverses, see :func:`lowrank.lora_pro_adjust`.
    max_grad_norm : float, optional
        Clip the global norm of the adjusted gradients (LoRA-Pro directions, or g̃ in
        "full" mode, together with the plain gradients of other parameters) to this
        value, after the adjustment and before Adam.
    pairs : torch.nn.Module or iterable of LoraPair or (A, B, scaling), optional
        The LoRA pairs (default: found in ``params`` when it is a model; found pairs
        with a frozen factor are left out). Both factors of each pair must be among
        the optimized parameters.
    adapter : str, optional
        PEFT adapter name used when pairs are found in a model.

    See Also
    --------
    lora_pro_adjust_ : The adjustment as an in-place gradient transform.

    Notes
    -----
    Parameters outside any pair get plain AdamW. Adam states are float32 for float32,
    float16 and bfloat16 parameters (float64 for float64 ones), also after
    ``load_state_dict``. Gradients are read at ``step()``, so gradient accumulation
    works as usual; the adjustment is linear in the gradient, so adjusting the
    accumulated gradient is exact.

    Speed: the per-layer Python and dispatch cost is what dominates a LoRA step, so
    pairs with equal shapes (and param groups) are stacked: each step copies the
    factors and gradients into per-shape stacks, adjusts all layers with a few batched
    products and one batched ``eigh`` per rank, runs PyTorch's fused AdamW kernel on
    the stacks, and copies the factors back. The Adam states live in those stacks;
    ``self.state[p]`` holds views of them, so ``state_dict``/``load_state_dict`` work
    per parameter as usual (after a load, or when an entry or a parameter's whole state
    dict is replaced or deleted, the stacks are rebuilt from the entries at the next
    step; a state without the moments of this ``mode`` starts Adam afresh, step count
    included). Copies (``copy.deepcopy``, pickle) carry the options and pairs. On CPU
    with several threads the fused kernel is used only for large tensors (it opens a
    parallel region per tensor).
    ``python bench/bench_lora_pro.py`` times a step on all-MiniLM-L6-v2 against
    ``torch.optim.AdamW``.

    Memory in "full" mode: 8·out·in bytes of states per adapted layer (as full
    fine-tuning with Adam), plus, per shape, two reused buffers (g̃ and its Adam
    direction) of at most 2**20 elements each, or one layer if larger. "efficient"
    mode needs states only of the size of A and B (and stacked copies of the factors
    and gradients).

    Examples
    --------
    >>> import torch
    >>> from lowrank.torch import LoRAProAdamW
    >>> A = torch.nn.Parameter(torch.randn(2, 6))
    >>> B = torch.nn.Parameter(torch.randn(5, 2))
    >>> opt = LoRAProAdamW([A, B], lr=1e-2, pairs=[(A, B, 2.0)])
    >>> x, y = torch.randn(8, 6), torch.randn(8, 5)
    >>> ((x @ (2.0 * B @ A).T - y) ** 2).mean().backward()
    >>> opt.step()
    >>> sorted(opt.state[A])
    ['exp_avg', 'exp_avg_sq', 'initial', 'step']
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        mode: str = "efficient",
        weight_decay_to: str = "init",
        gauge: str = "sylvester",
        damping: str | float | None = "auto",
        max_grad_norm: float | None = None,
        pairs: Any = None,
        adapter: str | None = None,
    ) -> None:
        check_hyper(lr, betas, eps, weight_decay, max_grad_norm)
        self.mode = check_option(mode, "mode", ("efficient", "full"))
        self.weight_decay_to = check_option(weight_decay_to, "weight_decay_to", ("init", "zero"))
        self.gauge = check_option(gauge, "gauge", _GAUGES)
        # Validated here, not at the first step(): a typo must fail before any training.
        check_damping(damping)
        self.damping = damping
        self.max_grad_norm = max_grad_norm
        if isinstance(params, torch.nn.Module):
            pairs = params if pairs is None else pairs
            params = [p for p in params.parameters() if p.requires_grad]
        if pairs is None:
            msg = "pass a model, or param groups together with `pairs=` (a model or explicit pairs)"
            raise ValueError(msg)
        found = resolve_pairs(pairs, adapter=adapter)
        if isinstance(pairs, torch.nn.Module):  # found, not given: skip frozen adapters
            found = [p for p in found if p.A.requires_grad and p.B.requires_grad]
        for pair in found:
            if pair.A.is_meta or pair.B.is_meta:
                msg = f"LoRA pair {pair.name!r}: {_META}"
                raise ValueError(msg)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)
        # the stacked storage whose views the state holds (`_lora_pro_step._Cache`)
        self._stacked: Any = None
        self._pairs: tuple[Pair, ...] = ()
        self.pairs = found

    @property
    def pairs(self) -> tuple[Pair, ...]:
        """The LoRA pairs (a tuple: assign a new sequence of pairs to change them).

        Both factors of an assigned pair must already be optimized (``add_param_group``);
        new factors are anchored at their current value (``weight_decay_to="init"``),
        factors left out get plain AdamW from then on.
        """  # numpydoc ignore=RT01
        return self._pairs

    @pairs.setter
    def pairs(self, value: Any) -> None:
        pairs = tuple(resolve_pairs(value))
        for pair in pairs:
            if pair.A.is_meta or pair.B.is_meta:
                msg = f"LoRA pair {pair.name!r}: {_META}"
                raise ValueError(msg)
        self._check_pairs_are_optimized(pairs)
        paired = {id(t) for p in pairs for t in (p.A, p.B)}
        for t in (t for p in self._pairs for t in (p.A, p.B) if id(t) not in paired):
            self.state[t].pop("initial", None)  # no longer a factor: plain AdamW from now on
        self._pairs = pairs
        # ids of the paired factors: `step` gives every other parameter plain AdamW
        self._paired = paired
        if self.weight_decay_to == "init":
            for t in (t for p in pairs for t in (p.A, p.B)):
                if "initial" not in self.state[t]:
                    self.state[t]["initial"] = t.detach().clone()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group (as `torch.optim.Optimizer.add_param_group`).

        Parameters
        ----------
        param_group : dict
            The group: ``params`` and optional hyper-parameters.
        """
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        index = len(self.param_groups)
        for i, t in enumerate(params):
            if isinstance(t, torch.Tensor) and t.is_meta:
                msg = f"param group {index}, parameter {i} (shape {tuple(t.shape)}): {_META}"
                raise ValueError(msg)
        super().add_param_group({**param_group, "params": params})

    #: Attributes beyond torch.optim.Optimizer's that a copy or a pickle must carry.
    _PICKLED = ("mode", "weight_decay_to", "gauge", "damping", "max_grad_norm", "_pairs")

    def __getstate__(self) -> dict[str, Any]:
        """Torch's optimizer state plus this optimizer's options and pairs."""  # numpydoc ignore=RT01
        state = super().__getstate__()
        state.update({name: self.__dict__[name] for name in self._PICKLED})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore from `__getstate__`; the stacks are rebuilt at the next step."""  # numpydoc ignore=PR01
        super().__setstate__(state)
        # ids of the (copied) factors; stacks are rebuilt from the state's entries
        self._paired = {id(t) for p in self._pairs for t in (p.A, p.B)}
        self._stacked = None

    def _check_pairs_are_optimized(self, pairs: tuple[Pair, ...]) -> None:
        owned = {id(p) for g in self.param_groups for p in g["params"]}
        for pair in pairs:
            if id(pair.A) not in owned or id(pair.B) not in owned:
                msg = f"LoRA pair {pair.name!r}: both A and B must be in the optimizer's params"
                raise ValueError(msg)
        seen: dict[int, str] = {}
        for pair in pairs:
            for side, t in (("A", pair.A), ("B", pair.B)):
                first = seen.setdefault(id(t), f"{pair.name!r} ({side})")
                if first != f"{pair.name!r} ({side})":
                    msg = (
                        f"a parameter appears in more than one LoRA pair: {first} and "
                        f"{pair.name!r} ({side}); tied factors cannot be adjusted per layer"
                    )
                    raise ValueError(msg)

    def _group_of(self) -> dict[int, dict]:
        return {id(p): g for g in self.param_groups for p in g["params"]}

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss.

        Returns
        -------
        Any
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        pairs = [p for p in self.pairs if p.A.grad is not None or p.B.grad is not None]
        paired = self._paired
        others = [
            p
            for g in self.param_groups
            for p in g["params"]
            if p.grad is not None and id(p) not in paired
        ]
        plain = [p.grad.to(compute_dtype(p)) for p in others]
        (step_efficient if self.mode == "efficient" else step_full)(self, pairs, others, plain)
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict, keeping Adam states in float32 for low-precision parameters.

        Decay anchors follow ``weight_decay_to``: with "init", a LoRA factor whose loaded
        state carries no anchor (a state saved with "zero", or by another optimizer)
        keeps the one this optimizer holds; with "zero", loaded anchors are dropped.

        Parameters
        ----------
        state_dict : dict
            As returned by :meth:`state_dict`.
        """
        saved = state_dict["state"]
        paired = [t for p in self.pairs for t in (p.A, p.B)]
        own = {}
        if self.weight_decay_to == "init":  # copies: the current ones may be stack views
            own = {
                id(t): self.state[t]["initial"].clone()
                for t in paired
                if "initial" in self.state[t]
            }
        self._stacked = None  # the loaded entries are separate tensors: stack them anew
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        for idx, entries in saved.items():
            p = params[idx]
            for key, value in entries.items():
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    self.state[p][key] = value.to(device=p.device, copy=True)
        for p in params:  # only LoRA factors decay toward anchors, and only with "init"
            if id(p) not in self._paired or self.weight_decay_to == "zero":
                if "initial" in self.state.get(p, {}):
                    del self.state[p]["initial"]
            elif "initial" not in self.state[p] and id(p) in own:
                self.state[p]["initial"] = own[id(p)]
