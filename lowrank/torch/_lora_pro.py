"""LoRA-Pro for PyTorch/PEFT models: an AdamW optimizer and an in-place gradient transform."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .._lib._validation import check_option
from ._lora_pro_batch import (
    Pair,
    adjusted_grads,
    compute_dtype,
    equivalent_grads,
    project_back,
    resolve_pairs,
)

__all__ = ["LoRAProAdamW", "lora_pro_adjust_"]

_GAUGES = ("sylvester", "zero", "symmetric")


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
    Pairs whose gradients are both ``None`` are skipped. All pairs with the same
    shapes are adjusted in one batched call (one batched ``eigh``).

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
    r"""AdamW that trains LoRA adapters along the LoRA-Pro direction (SPEC §8.7, D4).

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
        The LoRA pairs (default: found in ``params`` when it is a model). Both factors
        of each pair must be among the optimized parameters.
    adapter : str, optional
        PEFT adapter name used when pairs are found in a model.

    See Also
    --------
    lora_pro_adjust_ : The adjustment as an in-place gradient transform.

    Notes
    -----
    Parameters outside any pair get plain AdamW. Adam states are float32 for float32,
    float16 and bfloat16 parameters (float64 for float64 ones), also after
    ``load_state_dict``. All pairs with equal shapes are adjusted in one batched call.
    Gradients are read at ``step()``, so gradient accumulation works as usual; the
    adjustment is linear in the gradient, so adjusting the accumulated gradient is exact.

    Memory in "full" mode: 8·out·in bytes of states per adapted layer (as full
    fine-tuning with Adam), plus a transient g̃ per shape group in chunks of at most
    2**26 elements. "efficient" mode needs states only of the size of A and B.

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
    ['exp_avg', 'exp_avg_sq', 'step']
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
        gauge: str = "sylvester",
        damping: str | float | None = "auto",
        max_grad_norm: float | None = None,
        pairs: Any = None,
        adapter: str | None = None,
    ) -> None:
        _check_hyper(lr, betas, eps, weight_decay, max_grad_norm)
        self.mode = check_option(mode, "mode", ("efficient", "full"))
        self.gauge = check_option(gauge, "gauge", _GAUGES)
        self.damping = damping
        self.max_grad_norm = max_grad_norm
        if isinstance(params, torch.nn.Module):
            pairs = params if pairs is None else pairs
            params = [p for p in params.parameters() if p.requires_grad]
        if pairs is None:
            msg = "pass a model, or param groups together with `pairs=` (a model or explicit pairs)"
            raise ValueError(msg)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)
        self.pairs = resolve_pairs(pairs, adapter=adapter)
        self._check_pairs_are_optimized()
        self._stack_buffers: dict = {}  # reused stacking memory, not part of the state

    def _check_pairs_are_optimized(self) -> None:
        owned = {id(p) for g in self.param_groups for p in g["params"]}
        for pair in self.pairs:
            if id(pair.A) not in owned or id(pair.B) not in owned:
                msg = f"LoRA pair {pair.name!r}: both A and B must be in the optimizer's params"
                raise ValueError(msg)
        in_pairs = [id(t) for p in self.pairs for t in (p.A, p.B)]
        if len(set(in_pairs)) != len(in_pairs):
            msg = "a parameter appears in more than one LoRA pair"
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
        pairs = [p for p in self.pairs if _has_grad(p)]
        paired = {id(t) for p in self.pairs for t in (p.A, p.B)}
        others = [
            p
            for g in self.param_groups
            for p in g["params"]
            if p.grad is not None and id(p) not in paired
        ]
        plain = [p.grad.to(compute_dtype(p)) for p in others]
        if self.mode == "efficient":
            self._step_efficient(pairs, others, plain)
        else:
            self._step_full(pairs, others, plain)
        return loss

    def _step_efficient(self, pairs: list[Pair], others: list, plain: list) -> None:
        gA, gB = adjusted_grads(
            pairs,
            [p.A.grad for p in pairs],
            [p.B.grad for p in pairs],
            gauge=self.gauge,
            damping=self.damping,
            buffers=self._stack_buffers,
        )
        params = [t for p in pairs for t in (p.A, p.B)] + others
        grads = [g for ab in zip(gA, gB, strict=True) for g in ab] + plain
        _foreach_adamw_(params, _clipped(grads, self.max_grad_norm), self)

    def _step_full(self, pairs: list[Pair], others: list, plain: list) -> None:
        g_eq = equivalent_grads(
            pairs, [p.A.grad for p in pairs], [p.B.grad for p in pairs], damping=self.damping
        )
        clipped = _clipped(g_eq + plain, self.max_grad_norm)
        g_eq, plain = clipped[: len(pairs)], clipped[len(pairs) :]
        groups = self._group_of()
        # Adam in weight space on g~ (states kept with A); betas/eps from A's group.
        updates = [
            _adam_direction(self.state[p.A], g, groups[id(p.A)], prefix="weight_")
            for p, g in zip(pairs, g_eq, strict=True)
        ]
        del g_eq, clipped
        uA, uB = project_back(pairs, updates, gauge=self.gauge, damping=self.damping)
        for p, a, b in zip(pairs, uA, uB, strict=True):
            _adamw_(p.A, a, groups[id(p.A)])
            _adamw_(p.B, b, groups[id(p.B)])
        for p, g in zip(others, plain, strict=True):
            _adamw_(p, _adam_direction(self.state[p], g, groups[id(p)]), groups[id(p)])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict, keeping Adam states in float32 for low-precision parameters.

        Parameters
        ----------
        state_dict : dict
            As returned by :meth:`state_dict`.
        """
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        for idx, entries in saved.items():
            p = params[idx]
            for key, value in entries.items():
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    self.state[p][key] = value.to(device=p.device, copy=True)


def _adam_direction(state: dict, g: torch.Tensor, group: dict, prefix: str = "") -> torch.Tensor:
    """Update Adam moments with ``g`` and return m̂/(sqrt(v̂) + eps)."""  # numpydoc ignore=PR01,RT01
    beta1, beta2 = group["betas"]
    m_key, v_key = f"{prefix}exp_avg", f"{prefix}exp_avg_sq"
    if m_key not in state:
        state["step"] = 0
        state[m_key] = torch.zeros_like(g)
        state[v_key] = torch.zeros_like(g)
    state["step"] += 1
    t = state["step"]
    m, v = state[m_key], state[v_key]
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
    return (m / (1 - beta1**t)).div_(denom)


def _foreach_adamw_(params: list, grads: list, opt: LoRAProAdamW) -> None:
    """AdamW on lists with ``_foreach`` ops, per (group, step, dtype)."""  # numpydoc ignore=PR01
    groups = opt._group_of()
    buckets: dict[tuple, list[int]] = {}
    for k, (p, g) in enumerate(zip(params, grads, strict=True)):
        state = opt.state[p]
        if "exp_avg" not in state:
            state.update(step=0, exp_avg=torch.zeros_like(g), exp_avg_sq=torch.zeros_like(g))
        state["step"] += 1
        key = (id(groups[id(p)]), state["step"], g.dtype, p.dtype, g.device)
        buckets.setdefault(key, []).append(k)
    for (_, t, *_), idx in buckets.items():
        group = groups[id(params[idx[0]])]
        _foreach_bucket_(
            [params[k] for k in idx],
            [grads[k] for k in idx],
            [opt.state[params[k]] for k in idx],
            group,
            t,
        )


def _foreach_bucket_(ps: list, gs: list, states: list, group: dict, t: int) -> None:
    """One AdamW update for tensors sharing group, step count and dtypes."""  # numpydoc ignore=PR01
    beta1, beta2 = group["betas"]
    lr, wd = group["lr"], group["weight_decay"]
    ms = [s["exp_avg"] for s in states]
    vs = [s["exp_avg_sq"] for s in states]
    torch._foreach_lerp_(ms, gs, 1 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, gs, gs, value=1 - beta2)
    denom = torch._foreach_sqrt(vs)
    torch._foreach_div_(denom, math.sqrt(1 - beta2**t))
    torch._foreach_add_(denom, group["eps"])
    step = lr / (1 - beta1**t)
    if ps[0].dtype == gs[0].dtype:
        if wd:
            torch._foreach_mul_(ps, 1 - lr * wd)
        torch._foreach_addcdiv_(ps, ms, denom, value=-step)
        return
    for p, m, d in zip(ps, ms, denom, strict=True):  # low-precision parameters: update in float32
        new = p.to(m.dtype)
        if wd:
            new.mul_(1 - lr * wd)
        p.copy_(new.addcdiv_(m, d, value=-step))


def _adamw_(param: torch.Tensor, direction: torch.Tensor, group: dict) -> None:
    """param <- (1 − lr·wd)·param − lr·direction, in float32 or wider."""  # numpydoc ignore=PR01
    lr, wd = group["lr"], group["weight_decay"]
    if param.dtype == direction.dtype:
        if wd:
            param.mul_(1 - lr * wd)
        param.add_(direction, alpha=-lr)
        return
    new = param.to(direction.dtype)
    if wd:
        new.mul_(1 - lr * wd)
    param.copy_(new.add_(direction, alpha=-lr))


def _clipped(grads: list[torch.Tensor], max_norm: float | None) -> list[torch.Tensor]:
    """``grads`` scaled to a global 2-norm <= ``max_norm`` (a copy)."""  # numpydoc ignore=PR01,RT01
    if max_norm is None or not grads:
        return grads
    total = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
    )
    factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return [g * factor.to(g.dtype) for g in grads]


def _check_hyper(lr: Any, betas: Any, eps: Any, weight_decay: Any, max_grad_norm: Any) -> None:
    """Raise ValueError on invalid hyper-parameters."""  # numpydoc ignore=PR01
    checks = [
        (lr, "lr", lr >= 0),
        (eps, "eps", eps >= 0),
        (weight_decay, "weight_decay", weight_decay >= 0),
        (betas, "betas", len(betas) == 2 and all(0 <= b < 1 for b in betas)),
    ]
    if max_grad_norm is not None:
        checks.append((max_grad_norm, "max_grad_norm", max_grad_norm > 0))
    for value, name, ok in checks:
        if not ok:
            msg = f"invalid `{name}`: {value!r}"
            raise ValueError(msg)
