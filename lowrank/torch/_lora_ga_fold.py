"""Weight gradients of linear layers summed straight into their accumulators.

Autograd forms each backward's weight gradient as a new tensor of the weight's size, and
a hook can only fold it into an accumulator once it exists: one gradient-sized temporary
per layer and batch on top of every accumulator (and glibc keeps freed blocks of that
size resident). For an ``nn.Linear`` (or a transformers ``Conv1D``) whose weight is a
target, the layer's forward is swapped, for the estimation only, for one whose backward
adds ``grad_outᵀ x`` to the accumulator in place (one GEMM with beta = 1) and gives
autograd no weight gradient. Any other use of the same weight still reaches it through
autograd and the post-accumulate hook, so the sum over all uses is kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ._lora_ga_dist import is_sharded

__all__ = ["Sink", "folding_forwards"]

Sink = Callable[[torch.Tensor, torch.Tensor], None]


class _FoldWeightGrad(torch.autograd.Function):
    """The layer's own forward; backward folds the weight gradient into `sink`."""

    @staticmethod
    def forward(  # numpydoc ignore=GL08
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, run: Any, sink: Sink, transposed: bool
    ) -> torch.Tensor:
        ctx.sink, ctx.transposed = sink, transposed
        ctx.save_for_backward(x, weight)
        return run(x)  # the original forward, bit for bit (grad mode is off here)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> Any:  # numpydoc ignore=GL08
        x, weight = ctx.saved_tensors
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        x2 = x.reshape(-1, x.shape[-1])
        # Linear: W is (out, in), dW = g^T x; Conv1D: W is (in, out), dW = x^T g
        ctx.sink(*((x2.T, g2) if ctx.transposed else (g2.T, x2)))
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ (weight.T if ctx.transposed else weight)
        return grad_x, None, None, None, None


def _sink(accum: dict[str, torch.Tensor | None], name: str, dtype: torch.dtype) -> Sink:
    """Add ``a @ b`` to ``accum[name]`` in place; the first product becomes the accumulator."""  # numpydoc ignore=PR01,RT01

    def fold(a: torch.Tensor, b: torch.Tensor) -> None:
        acc = accum[name]
        if acc is None:
            g = torch.mm(a, b)
            accum[name] = g if g.dtype == dtype else g.to(dtype)
        elif acc.dtype == a.dtype == b.dtype:
            acc.addmm_(a, b)  # no gradient-sized temporary
        else:  # e.g. bf16 weights, float32 accumulator: as the hook path does it
            acc.add_(torch.mm(a, b))

    return fold


def _autocast(device_type: str) -> bool:
    """Whether autocast is on for `device_type` (its casts are left to autograd)."""  # numpydoc ignore=PR01,RT01
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # torch < 2.4 takes no device type
        return bool(torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled())


def _kind(module: torch.nn.Module) -> bool | None:
    """False for a plain ``nn.Linear`` forward, True for transformers' ``Conv1D``, else None."""  # numpydoc ignore=PR01,RT01
    if "forward" in vars(module):  # an instance-level forward (accelerate hooks, ...): left alone
        return None
    cls = type(module)
    if isinstance(module, torch.nn.Linear) and cls.forward is torch.nn.Linear.forward:
        return False
    if cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers") and hasattr(
        module, "nf"
    ):
        return True
    return None


def _folding_forward(
    module: torch.nn.Module, weight: torch.nn.Parameter, sink: Sink, transposed: bool
) -> Callable[..., Any]:
    """`module`'s forward, through `_FoldWeightGrad` whenever a graph is being recorded."""  # numpydoc ignore=PR01,RT01
    run = type(module).forward.__get__(module)

    def forward(*args: Any, **kwargs: Any) -> Any:
        x = args[0] if len(args) == 1 and not kwargs else None
        bias = getattr(module, "bias", None)
        usable = (
            isinstance(x, torch.Tensor)
            and torch.is_grad_enabled()
            and module.weight is weight
            and weight.requires_grad
            and x.dtype == weight.dtype
            and not _autocast(x.device.type)
            and not (isinstance(bias, torch.Tensor) and bias.requires_grad)
        )
        if not usable:  # autograd and the post-accumulate hook handle this call
            return run(*args, **kwargs)
        return _FoldWeightGrad.apply(x, weight, run, sink, transposed)

    return forward


@contextlib.contextmanager
def folding_forwards(
    model: torch.nn.Module,
    leaves: dict[str, torch.nn.Parameter],
    accum: dict[str, torch.Tensor | None],
    dtype: torch.dtype,
) -> Iterator[None]:
    """Swap the forward of every linear layer whose weight is a target, then restore it.

    Sharded (FSDP2) weights are left to autograd: FSDP2 reduce-scatters their gradients
    itself.
    """  # numpydoc ignore=PR01,YI01
    by_id = {id(p): (n, p) for n, p in leaves.items() if p.ndim == 2 and not is_sharded(p)}
    patched = []
    try:
        for module in model.modules():
            hit = by_id.get(id(getattr(module, "weight", None)))
            kind = _kind(module) if hit is not None else None
            if kind is None:
                continue
            name, p = hit
            module.forward = _folding_forward(module, p, _sink(accum, name, dtype), kind)
            patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward
