"""LoRA-GA factors for every layer, computed before any weight is written.

Layers of equal (shape, rank, scaling, device) form one batched `lowrank.lora_ga_init`
call; each chunk holds at most 2**27 gradient entries (512 MiB in float32).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch

from .._lora_ga import lora_ga_init
from ._layers import LoraPair

__all__ = ["LoraGALayerInfo", "plan_factors"]

_CHUNK_ENTRIES = 2**27
# Default offset bound for bf16/fp16 base weights, as a fraction of max|W|. Measured on
# all-MiniLM-L6-v2 in bf16 (all attention and MLP layers, r = 8, compat="paper" stable, two
# gradient seeds): the change of the float32-evaluated function at init, against the
# model's own bf16 rounding error, was 0.9-1.1x without a bound, 0.9x at bound 1 (the
# official norm_clip) and 0.55x at bound 1/2.
LOW_PRECISION_BOUND = 0.5


class LoraGALayerInfo(NamedTuple):
    """Diagnostics of one layer's LoRA-GA initialisation (``return_info=True``).

    Attributes
    ----------
    S : torch.Tensor
        Leading singular values of the gradient, ``min(2 r + 1, out, in)`` of them.
    gap_r : float
        ``σ_r / σ_{r+1}`` (1-based): separation of the A and B halves.
    gap_2r : float
        ``σ_2r / σ_{2r+1}``: separation of the top-2r block the first step follows
        from the rest; near 1 (real gradients: often 1.01-1.05) the singular vectors
        at the block edge are ill-determined.
    energy_2r : float
        ``Σ_{i<=2r} σ_i² / ||G||_F²``: the share of the gradient's squared Frobenius
        norm that the first LoRA-GA step follows.
    offset_ratio : float
        ``max|s B0 A0| / max|W|``: the offset's largest entry against the weight's
        (what ``norm_clip`` bounds by 1).
    """

    S: torch.Tensor
    gap_r: float
    gap_2r: float
    energy_2r: float
    offset_ratio: float


def _weight_oi(pair: LoraPair) -> torch.Tensor:
    """The base weight in (out, in) layout (detached)."""  # numpydoc ignore=PR01,RT01
    w = pair.weight.detach()
    return w.T if pair.fan_in_fan_out else w


def generator(seed: Any) -> torch.Generator:
    """A torch CPU generator from a seed or generator (None: fresh entropy)."""  # numpydoc ignore=PR01,RT01
    if isinstance(seed, torch.Generator):
        return seed
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


def _groups(pairs: list[LoraPair], glist: list[Any]) -> Iterable[list[tuple[LoraPair, Any]]]:
    """Chunks of layers with equal (shape, rank, scaling, device)."""  # numpydoc ignore=PR01,RT01
    groups: dict[tuple[Any, ...], list[tuple[LoraPair, Any]]] = {}
    for pair, g in zip(pairs, glist, strict=True):
        key = (tuple(g.shape), pair.A.shape[0], pair.scaling, str(g.device))
        groups.setdefault(key, []).append((pair, g))
    for items in groups.values():
        out, inn = items[0][1].shape
        size = max(1, _CHUNK_ENTRIES // (out * inn))
        for i in range(0, len(items), size):
            yield items[i : i + size]


def plan_factors(
    pairs: list[LoraPair], glist: list[Any], rng: Any, options: dict[str, Any]
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, LoraGALayerInfo]]:
    """Float32 ``(A0, B0)`` and diagnostics per layer name; writes nothing."""  # numpydoc ignore=PR01,RT01
    gen = generator(rng)
    factors, infos = {}, {}
    for chunk in _groups(pairs, glist):
        stack = torch.stack([g for _, g in chunk]).float()
        opts = dict(options)
        norm_clip = opts.pop("norm_clip", None)
        if opts.get("scale") in ("weight_svd", "weightS"):
            opts["weight"] = torch.stack([_weight_oi(p) for p, _ in chunk]).float()
        r, s = chunk[0][0].A.shape[0], chunk[0][0].scaling
        (A0, B0), info = lora_ga_init(stack, r, scaling=s, rng=gen, return_info=True, **opts)
        energy = (info.S[:, : 2 * r].double() ** 2).sum(-1) / _squared_norms_(stack, info.S)
        del stack
        for i, (pair, _) in enumerate(chunk):
            offset_max = abs(s) * float((B0[i] @ A0[i]).abs_().max())  # one m x n temporary
            w_max = float(pair.weight.detach().abs().max())
            ratio = offset_max / max(w_max, torch.finfo(torch.float32).tiny)
            a, b = A0[i], B0[i]
            bound = offset_bound(norm_clip, pair.weight.dtype)
            if bound is not None and ratio > bound:
                root = (bound / ratio) ** 0.5  # both factors: the offset shrinks by bound/ratio
                a, b, ratio = a * root, b * root, bound
            factors[pair.name] = (a, b)
            infos[pair.name] = LoraGALayerInfo(
                info.S[i], float(info.gap_r[i]), float(info.gap_2r[i]), float(energy[i]), ratio
            )
    _warn_large_offsets(pairs, infos)
    return factors, infos


def _squared_norms_(stack: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """``||G_i||_F²`` in float64 from a float32 norm, scaling `stack` in place (it is ours).

    A float64 copy would double the chunk's memory; a plain float32 sum of squares
    underflows below ~1e-19 and overflows above ~1e19. Each matrix is first multiplied
    by the power of two nearest ``1/σ_1`` (exact), so its entries are at most ~1.
    """  # numpydoc ignore=PR01,RT01
    s1 = S[:, 0].double()
    k = torch.where(s1 > 0, -torch.round(torch.log2(s1)), torch.zeros_like(s1)).clamp(-120, 120)
    scale = torch.exp2(k)
    stack.mul_(scale.to(stack.dtype)[:, None, None])
    return (torch.linalg.vector_norm(stack, dim=(-2, -1)).double() / scale) ** 2


def offset_bound(norm_clip: Any, dtype: torch.dtype) -> float | None:
    """The bound on ``max|s B0 A0| / max|W|`` that `norm_clip` asks for (None: none)."""  # numpydoc ignore=PR01,RT01
    if norm_clip is None:
        return LOW_PRECISION_BOUND if dtype in (torch.bfloat16, torch.float16) else None
    if isinstance(norm_clip, bool):
        return 1.0 if norm_clip else None
    if isinstance(norm_clip, (int, float)) and 0 < norm_clip < float("inf"):
        return float(norm_clip)
    msg = f"`norm_clip` must be None, a bool or a positive finite number; got {norm_clip!r}"
    raise ValueError(msg)


def _warn_large_offsets(pairs: list[LoraPair], infos: dict[str, LoraGALayerInfo]) -> None:
    """Warn where a low-precision weight gets an offset larger than itself."""  # numpydoc ignore=PR01
    low = [p.name for p in pairs if p.weight.element_size() < 4]
    large = sorted((infos[n].offset_ratio, n) for n in low if infos[n].offset_ratio > 1.001)
    if large:
        ratio, name = large[-1]
        msg = (
            f"the LoRA-GA offset s B0 A0 exceeds its low-precision base weight in "
            f"{len(large)} layer(s) (largest: {name!r}, max|offset| = {ratio:.3g} x max|W|); "
            "the residual weight W - s B0 A0 is rounded to the weight's dtype, so the "
            "model's outputs move by that rounding. norm_clip=True bounds the offset by "
            "max|W|; a larger stable_gamma shrinks it"
        )
        warnings.warn(msg, UserWarning, stacklevel=4)
