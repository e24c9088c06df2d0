"""AdamW arithmetic for LoRAProAdamW: float32 states, decoupled decay, clipping."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

__all__ = ["adamw_lists_", "check_hyper", "clip_factor", "foreach_adamw_", "foreach_bucket_"]

#: Devices with PyTorch's fused AdamW kernel; others take the ``_foreach`` path.
FUSED_DEVICES = ("cpu", "cuda", "mps")
#: On CPU with several threads the fused kernel opens a parallel region per tensor,
#: however small: measured 167 ms for 8 tensors of 40 elements on a loaded 2-core
#: machine (7 µs with one thread). There it runs only on tensors at least this large.
FUSED_MIN_NUMEL_THREADED = 1 << 16


def foreach_adamw_(params: list, grads: list, opt: Any) -> None:
    """AdamW on lists with ``_foreach`` ops, per (group, step, dtype)."""  # numpydoc ignore=PR01
    groups = opt._group_of()
    buckets: dict[tuple, list[int]] = {}
    for k, (p, g) in enumerate(zip(params, grads, strict=True)):
        state = opt.state[p]
        if "exp_avg" not in state:
            state.update(step=0, exp_avg=torch.zeros_like(g), exp_avg_sq=torch.zeros_like(g))
        state["step"] += 1
        key = (id(groups[id(p)]), state["step"], g.dtype, p.dtype, g.device, "initial" in state)
        buckets.setdefault(key, []).append(k)
    for (_, t, *_), idx in buckets.items():
        group = groups[id(params[idx[0]])]
        foreach_bucket_(
            [params[k] for k in idx],
            [grads[k] for k in idx],
            [opt.state[params[k]] for k in idx],
            group,
            t,
        )


def _foreach_moments_(ms: list, vs: list, gs: list, t: int, group: dict) -> list:
    """Update Adam's moments in place; return ``sqrt(v̂) + eps`` (new tensors)."""  # numpydoc ignore=PR01,RT01
    beta1, beta2 = group["betas"]
    torch._foreach_lerp_(ms, gs, 1 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, gs, gs, value=1 - beta2)
    denom = torch._foreach_sqrt(vs)
    torch._foreach_div_(denom, math.sqrt(1 - beta2**t))
    torch._foreach_add_(denom, group["eps"])
    return denom


def foreach_bucket_(ps: list, gs: list, states: list, group: dict, t: int) -> None:
    """One AdamW update for tensors sharing group, step count and dtypes."""  # numpydoc ignore=PR01
    beta1 = group["betas"][0]
    lr, wd = group["lr"], group["weight_decay"]
    ms = [s["exp_avg"] for s in states]
    vs = [s["exp_avg_sq"] for s in states]
    denom = _foreach_moments_(ms, vs, gs, t, group)
    step = lr / (1 - beta1**t)
    anchors = [s.get("initial") for s in states]
    anchored = anchors[0] is not None  # buckets never mix anchored and plain tensors
    if ps[0].dtype == gs[0].dtype:
        if wd and anchored:  # decoupled decay of (p - p0): p <- p - lr·wd·(p - p0)
            torch._foreach_lerp_(ps, anchors, lr * wd)
        elif wd:
            torch._foreach_mul_(ps, 1 - lr * wd)
        torch._foreach_addcdiv_(ps, ms, denom, value=-step)
        return
    for p, m, d, p0 in zip(ps, ms, denom, anchors, strict=True):  # low precision: in float32
        new = p.to(m.dtype)
        _decay_(new, p0, lr * wd)
        p.copy_(new.addcdiv_(m, d, value=-step))


def adamw_lists_(ps, gs, ms, vs, t, group, *, weight_decay, lr=None) -> None:
    """AdamW on lists sharing step ``t`` and ``group``'s betas/eps, in place.

    ``p <- p·(1 − lr·weight_decay) − lr·m̂/(sqrt(v̂) + eps)``: one fused kernel where
    PyTorch has it (one pass over each tensor), else the same arithmetic with ``_foreach``.
    """  # numpydoc ignore=PR01
    beta1, beta2 = group["betas"]
    lr = group["lr"] if lr is None else lr
    if not _fused_ok(ps):
        denom = _foreach_moments_(ms, vs, gs, t, group)
        if weight_decay:
            torch._foreach_mul_(ps, 1 - lr * weight_decay)
        torch._foreach_addcdiv_(ps, ms, denom, value=-lr / (1 - beta1**t))
        return
    step = torch.tensor(float(t), device=ps[0].device)  # read only: one for the whole list
    torch._fused_adamw_(
        ps,
        gs,
        ms,
        vs,
        [],
        [step] * len(ps),
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        weight_decay=weight_decay,
        eps=group["eps"],
        amsgrad=False,
        maximize=False,
    )


def _fused_ok(ps: list[torch.Tensor]) -> bool:
    """Whether the fused kernel suits these tensors (see FUSED_MIN_NUMEL_THREADED)."""  # numpydoc ignore=PR01,RT01
    kind = ps[0].device.type
    if kind not in FUSED_DEVICES:
        return False
    if kind != "cpu" or torch.get_num_threads() == 1:
        return True
    return min(p.numel() for p in ps) >= FUSED_MIN_NUMEL_THREADED


def _decay_(new: torch.Tensor, anchor: torch.Tensor | None, rate: float) -> None:
    """Decoupled decay toward `anchor` (toward 0 when None), in place."""  # numpydoc ignore=PR01
    if not rate:
        return
    if anchor is None:
        new.mul_(1 - rate)
    else:
        new.lerp_(anchor.to(new.dtype), rate)


def _wide(g: torch.Tensor) -> torch.Tensor:
    """``g`` in float32, or float64 if it is float64."""  # numpydoc ignore=PR01,RT01
    return g if g.dtype in (torch.float32, torch.float64) else g.float()


def clip_factor(grads: list[torch.Tensor], max_norm: float | None) -> torch.Tensor | None:
    """Factor scaling ``grads`` to a global 2-norm <= ``max_norm`` (None: no clipping).

    Entries may be precomputed norms (0-d tensors): the norm of norms is the same.
    """  # numpydoc ignore=PR01,RT01
    if max_norm is None or not grads:
        return None
    # each norm in its own compute dtype (float64 stays float64), combined in float64
    norms = [g if g.ndim == 0 else torch.linalg.vector_norm(_wide(g)) for g in grads]
    total = torch.linalg.vector_norm(torch.stack([n.double() for n in norms]))
    return torch.clamp(max_norm / (total + 1e-6), max=1.0)


def check_hyper(lr: Any, betas: Any, eps: Any, weight_decay: Any, max_grad_norm: Any) -> None:
    """Raise TypeError/ValueError on invalid hyper-parameters, naming each."""  # numpydoc ignore=PR01
    for value, name in ((lr, "lr"), (eps, "eps"), (weight_decay, "weight_decay")):
        _check_real(value, name, strict=False)
    if max_grad_norm is not None:
        _check_real(max_grad_norm, "max_grad_norm", strict=True)
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        msg = f"invalid `betas`: need two coefficients in [0, 1); got {betas!r}"
        raise ValueError(msg)
    for b in betas:
        _check_real(b, "betas", strict=False)
        if not b < 1:
            msg = f"invalid `betas`: each must be in [0, 1); got {betas!r}"
            raise ValueError(msg)


def _check_real(value: Any, name: str, *, strict: bool) -> None:
    """A finite real number, > 0 (strict) or >= 0."""  # numpydoc ignore=PR01
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"invalid `{name}`: must be a real number; got {value!r}"
        raise TypeError(msg)
    ok = math.isfinite(value) and (value > 0 if strict else value >= 0)
    if not ok:
        bound = "> 0" if strict else ">= 0"
        msg = f"invalid `{name}`: must be finite and {bound}; got {value!r}"
        raise ValueError(msg)
