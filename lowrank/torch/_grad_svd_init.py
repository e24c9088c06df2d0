"""LoRA-GA factors from gradient SVDs (`estimate_gradient_svd`) in place of gradients.

LoRA-GA uses only the top ``2r`` singular triplets of a layer's gradient, which an
`estimate_gradient_svd` result holds; every direction and scale option works from them
(``scale="weight_svd"`` reads the base weight's own singular values). What needs the
gradient itself is refused by name: the gradient-SVD options ``svd``,
``n_oversamples`` and ``n_power_iter`` (the SVD is given), and estimates holding fewer
than ``2r`` triplets.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from .. import _lora_ga as _core
from .._agnostic import _lora_ga as _agnostic
from .._lib import _compat
from .._lib._random import Random
from ._grad_svd_types import GradientSVD
from ._layers import LoraPair
from ._lora_ga_factors import LoraGALayerInfo, generator, offset_bound

__all__ = ["sketch_factors", "stand_ins"]

_SVD_OPTIONS = ("svd", "n_oversamples", "n_power_iter")
# lowrank.lora_ga_init's own defaults, so both paths agree when an option is left out
_DEFAULTS = {n: p.default for n, p in inspect.signature(_core.lora_ga_init).parameters.items()}


def stand_ins(glist: list[Any]) -> list[Any]:
    """`glist` itself, or for gradient SVDs zero-memory ``(out, in)`` stand-ins for the checks.

    The stand-in is a zero broadcast to the gradient's shape (no ``out x in`` storage),
    so the shape, rank and tie checks of `lora_ga_init_` apply unchanged; the SVD's own
    finiteness and shapes are checked here.
    """  # numpydoc ignore=PR01,RT01
    kinds = {isinstance(g, GradientSVD) for g in glist}
    if kinds != {True}:
        if len(kinds) == 2:
            msg = "`grads` mixes gradients and gradient SVDs: pass one kind for every layer"
            raise ValueError(msg)
        return glist
    out = []
    for i, g in enumerate(glist):
        U, S, Vh = g.U, g.S, g.Vh
        if U.ndim != 2 or S.ndim != 1 or Vh.ndim != 2 or not (
                U.shape[1] == S.shape[0] == Vh.shape[0]):
            msg = (f"gradient SVD {i} must hold U (out, k), S (k,), Vh (k, in); got "
                   f"{tuple(U.shape)}, {tuple(S.shape)}, {tuple(Vh.shape)}")
            raise ValueError(msg)
        if not all(bool(torch.isfinite(t).all()) for t in (U, S, Vh)):
            msg = f"gradient SVD {i} holds NaN or Inf"
            raise ValueError(msg)
        out.append(torch.zeros((), dtype=S.dtype, device=S.device).expand(U.shape[0], Vh.shape[1]))
    return out


def sketch_factors(
    pairs: list[LoraPair], glist: list[Any], rng: Any, options: dict[str, Any]
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, LoraGALayerInfo]] | None:
    """Float32 ``(A0, B0)`` and diagnostics per layer from gradient SVDs; None for gradients.

    Same factors as ``lowrank.lora_ga_init`` on a gradient with these top-2r triplets.
    """  # numpydoc ignore=PR01,RT01
    if not glist or not isinstance(glist[0], GradientSVD):
        return None
    given = [k for k in _SVD_OPTIONS if options.get(k) is not None]
    if given:
        msg = (f"option(s) {given} choose how the gradient SVD is computed; with gradient "
               "SVDs from estimate_gradient_svd it is given: leave them out")
        raise TypeError(msg)
    opts = {k: v for k, v in options.items() if k not in (*_SVD_OPTIONS, "norm_clip")}
    gen = generator(rng)
    factors, infos = {}, {}
    for pair, g in zip(pairs, glist, strict=True):
        A, B, info = _one(pair, g, gen, opts)
        bound = offset_bound(options.get("norm_clip"), pair.weight.dtype)
        ratio = pair.scaling * float((B @ A).abs_().max())
        ratio /= max(float(pair.weight.detach().abs().max()), torch.finfo(torch.float32).tiny)
        if bound is not None and ratio > bound:
            root = (bound / ratio) ** 0.5
            A, B, ratio = A * root, B * root, bound
        factors[pair.name] = (A, B)
        infos[pair.name] = info._replace(offset_ratio=ratio)
    return factors, infos


def _one(pair: LoraPair, g: GradientSVD, gen: torch.Generator, opts: dict[str, Any]) -> Any:
    """``(A0, B0, info)`` of one layer from its top-2r triplets."""  # numpydoc ignore=PR01,RT01
    r, k = pair.A.shape[0], g.S.shape[0]
    if k < 2 * r:
        msg = (f"LoRA-GA of rank {r} needs the top 2r = {2 * r} gradient triplets of "
               f"{pair.name!r}; the estimate holds {k}: estimate with rank >= {2 * r}")
        raise ValueError(msg)
    U, S, Vh = g.U[:, : 2 * r].float(), g.S[: 2 * r].float(), g.Vh[: 2 * r].float()
    xp = _compat.array_namespace(S)
    stand_in = torch.zeros((), dtype=torch.float32).expand(U.shape[0], Vh.shape[1])
    names = ("direction", "scale", "stable_gamma", "compat")
    factor_opts = (r, pair.scaling, *(opts.get(n, _DEFAULTS[n]) for n in names))
    plan, _ = _core._check_options(stand_in, factor_opts, ("exact", None, None))
    wscale = None
    if plan.scale == "weight_svd":
        sw = torch.linalg.svdvals(_weight_oi(pair).float())[: plan.rank]
        wscale = _agnostic.weight_scale(sw, plan, xp)
    perm = None
    if plan.direction == "random":
        perm = _core._permutations(Random(gen, xp, S.device), (), plan.rank, xp)
    rtol = max(U.shape[0], Vh.shape[1]) * float(torch.finfo(torch.float32).eps)
    gap_r, _ = _agnostic.spectral_gaps(S, r, rtol, xp)
    gap_2r = float(g.S[2 * r - 1] / g.S[2 * r]) if k > 2 * r and g.S[2 * r] > 0 else g.gap
    if k > 2 * r and g.S[2 * r] == 0:
        gap_2r = math.inf if g.S[2 * r - 1] > 0 else math.nan
    _core._warn_spectrum(S, (gap_r, torch.tensor(gap_2r)), xp)
    A, B = _agnostic.lora_ga_factors(U, S, Vh, plan, perm, wscale, xp)
    top = float((g.S.double() ** 2).sum())
    total = top / g.energy_captured if g.energy_captured > 0 else 0.0
    energy = float((S.double() ** 2).sum()) / total if total > 0 else 1.0
    info = LoraGALayerInfo(g.S[: 2 * r + 1], float(gap_r), gap_2r, energy, 0.0)
    return A, B, info


def _weight_oi(pair: LoraPair) -> torch.Tensor:
    """The base weight in (out, in) layout (detached)."""  # numpydoc ignore=PR01,RT01
    w = pair.weight.detach()
    return w.T if pair.fan_in_fan_out else w
