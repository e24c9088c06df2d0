"""LoRA-GA state: the base-weight offset, saving A0/B0, rebuilding, rank-2r LoRA export."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ._layers import LoraPair, find_lora_pairs
from ._lora_ga_checks import (
    check_config_not_initialised,
    check_not_initialised,
    mark_config_initialised,
    mark_initialised,
    restore_on_failure,
)

__all__ = [
    "LoraGAInitial",
    "apply_lora_ga_offset_",
    "export_lora_adapter",
    "load_lora_ga_init",
    "save_lora_ga_init",
    "subtract_offset_",
]

_FORMAT = "lowrank.lora_ga/1"


class LoraGAInitial(NamedTuple):
    """The initial LoRA-GA factors of one layer, as stored in the adapter.

    Attributes
    ----------
    A : torch.Tensor
        ``A0`` of shape (r, in), in the adapter's dtype.
    B : torch.Tensor
        ``B0`` of shape (out, r), in the adapter's dtype.
    scaling : float
        The layer's scaling ``s``; the base weight was replaced by ``W - s B0 A0``.
    """

    A: torch.Tensor
    B: torch.Tensor
    scaling: float


def _offset_weight(
    weight: torch.Tensor, A: torch.Tensor, B: torch.Tensor, s: float, fan: bool
) -> torch.Tensor:
    """``W - s B A`` in float32 from the stored factors, rounded once to W's dtype."""  # numpydoc ignore=PR01,RT01
    offset = s * (B.float() @ A.float())
    w = weight.detach().float()
    w = w - (offset.T if fan else offset)
    return w.to(weight.dtype)


def _check_layer(
    weight: torch.Tensor, new: torch.Tensor, A: Any, B: Any, s: float, pair: LoraPair
) -> None:
    """Raise unless ``new + s B A`` reproduces ``weight`` within the dtype tolerance."""  # numpydoc ignore=PR01
    offset = s * (B.float() @ A.float())
    offset = offset.T if pair.fan_in_fan_out else offset
    w = weight.detach().float()
    diff = float((new.float() + offset - w).abs().max())
    size = max(float(w.abs().max()), float(offset.abs().max()), 1e-30)
    tol = 4 * torch.finfo(weight.dtype).eps * size + 16 * torch.finfo(torch.float32).eps * size
    if not diff <= tol:
        msg = (
            f"LoRA-GA init changed layer {pair.name!r}: max |W_res + s B A - W| = {diff:.3g} "
            f"> {tol:.3g}"
        )
        raise ValueError(msg)


def subtract_offset_(pair: LoraPair, A0: torch.Tensor, B0: torch.Tensor) -> LoraGAInitial:
    """Store A0/B0 in the adapter's dtype and replace W by ``W - s B0 A0``.

    The offset is formed from the factors as stored (after rounding to the adapter's
    dtype), so ``W_res + s B0 A0`` reproduces W up to one rounding of W_res.
    """  # numpydoc ignore=PR01,RT01
    with torch.no_grad():
        A = A0.to(dtype=pair.A.dtype, device=pair.A.device)
        B = B0.to(dtype=pair.B.dtype, device=pair.B.device)
        new = _offset_weight(pair.weight, A, B, pair.scaling, pair.fan_in_fan_out)
        _check_layer(pair.weight, new, A, B, pair.scaling, pair)
        pair.weight.copy_(new)
        pair.A.copy_(A)
        pair.B.copy_(B)
    return LoraGAInitial(A.detach().clone(), B.detach().clone(), pair.scaling)


def save_lora_ga_init(state: dict[str, LoraGAInitial], path: str | os.PathLike[str]) -> None:
    """Save the initial factors and scalings returned by `lora_ga_init_`.

    Parameters
    ----------
    state : dict of str to LoraGAInitial
        From `lora_ga_init_`.
    path : str or path-like
        Target file (``torch.save`` format, tensors only).

    See Also
    --------
    load_lora_ga_init : Read the file back.
    apply_lora_ga_offset_ : Rebuild the initialised model from the original base.
    """
    layers = {
        k: {"A": v.A.cpu(), "B": v.B.cpu(), "scaling": float(v.scaling)} for k, v in state.items()
    }
    torch.save({"format": _FORMAT, "layers": layers}, path)


def load_lora_ga_init(path: str | os.PathLike[str]) -> dict[str, LoraGAInitial]:
    """Load what `save_lora_ga_init` wrote.

    Parameters
    ----------
    path : str or path-like
        File written by `save_lora_ga_init`.

    Returns
    -------
    dict of str to LoraGAInitial
        Layer name -> initial factors and scaling.

    Raises
    ------
    ValueError
        If the file is not a lowrank LoRA-GA state.
    """
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        msg = f"{os.fspath(path)!r} is not a lowrank LoRA-GA state (format {_FORMAT})"
        raise ValueError(msg)
    return {
        k: LoraGAInitial(v["A"], v["B"], float(v["scaling"])) for k, v in data["layers"].items()
    }


def apply_lora_ga_offset_(
    model: torch.nn.Module, state: dict[str, LoraGAInitial], *, adapter: str | None = None
) -> None:
    """Rebuild the LoRA-GA-initialised model from the original base and the saved state.

    Sets every listed layer's adapter to ``(A0, B0)`` and its base weight to
    ``W - s B0 A0`` with the same float32 arithmetic as `lora_ga_init_`, so the
    result equals the model right after initialisation. Load trained adapter weights
    afterwards to continue from a checkpoint.

    Parameters
    ----------
    model : torch.nn.Module
        The unmodified base model wrapped with the same PEFT LoRA config.
    state : dict of str to LoraGAInitial
        From `lora_ga_init_` or `load_lora_ga_init`.
    adapter : str, optional
        PEFT adapter name; default: the active adapter(s).

    Raises
    ------
    ValueError
        If a layer of `state` is missing from `model`, its scaling differs, its
        adapter carries a LoRA-GA offset already (applying twice would subtract two
        offsets; a reloaded LoRA-GA adapter's config says so) or has a nonzero
        ``lora_B``. The model is then unchanged.
    """
    pairs = {p.name: p for p in find_lora_pairs(model, adapter=adapter)}
    todo = []
    for name, init in state.items():
        pair = pairs.get(name)
        if pair is None:
            msg = f"layer {name!r} of the LoRA-GA state is not a LoRA layer of `model`"
            raise ValueError(msg)
        if abs(pair.scaling - init.scaling) > 1e-12 * abs(init.scaling):
            msg = f"layer {name!r}: scaling {pair.scaling} differs from the saved {init.scaling}"
            raise ValueError(msg)
        todo.append((pair, init))
    touched = [pair for pair, _ in todo]
    check_config_not_initialised(model, touched)
    check_not_initialised(touched)
    with restore_on_failure(touched):
        applied = {pair.name: subtract_offset_(pair, init.A, init.B) for pair, init in todo}
    mark_initialised(touched)
    mark_config_initialised(model, touched)
    from ._lora_ga_save import install_lora_ga_saving  # it imports this module

    install_lora_ga_saving(model, applied)


def export_lora_adapter(
    model: torch.nn.Module,
    state: dict[str, LoraGAInitial],
    path: str | os.PathLike[str],
    *,
    adapter: str = "default",
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Save the trained LoRA-GA adapter as a plain rank-2r LoRA for the unmodified base.

    ``W_res + s B A = W + s [B, -B0] [A; A0]``: the exported adapter has
    ``lora_A = [A; A0]`` and ``lora_B = [B, -B0]``, rank ``2r`` and ``lora_alpha``
    adjusted (×2, or ×√2 under rsLoRA) so the scaling is unchanged — PEFT's own
    conversion. Stock ``PeftModel.from_pretrained(base, path)`` loads it. Layers
    without LoRA-GA state (left out of the init) are zero-padded to rank ``2r``.

    Parameters
    ----------
    model : peft.PeftModel
        The LoRA-GA-initialised (and possibly trained) PEFT model.
    state : dict of str to LoraGAInitial
        From `lora_ga_init_` or `load_lora_ga_init`.
    path : str or path-like
        Output folder (``adapter_config.json`` and ``adapter_model.safetensors``).
    adapter : str, default: "default"
        Adapter to export.
    state_dict : dict of str to torch.Tensor, optional
        The model's full state dict to read the adapter from, as ``save_pretrained``
        receives it from a ``Trainer`` (gathered under FSDP, for example); default: the
        model's own parameters.

    Raises
    ------
    ValueError
        If a layer of `state` is not in the adapter, or rsLoRA is combined with
        ``rank_pattern``/``alpha_pattern`` (no exact alpha exists then).
    """
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    config = _doubled_config(model.peft_config[adapter])
    tensors = get_peft_model_state_dict(model, state_dict=state_dict, adapter_name=adapter)
    done = set()
    for name, init in state.items():
        module = name[: -len(adapter) - 1] if name.endswith(f".{adapter}") else None
        key_A, key_B = f"{module}.lora_A.weight", f"{module}.lora_B.weight"
        if module is None or key_A not in tensors:
            msg = f"layer {name!r} of the LoRA-GA state is not in adapter {adapter!r}"
            raise ValueError(msg)
        A, B = tensors[key_A], tensors[key_B]
        tensors[key_A] = torch.cat([A, init.A.to(A)], dim=0).contiguous()
        tensors[key_B] = torch.cat([B, -init.B.to(B)], dim=1).contiguous()
        done.add(key_A)
    _pad_uninitialised(tensors, done)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(os.fspath(folder))
    save_file(tensors, os.fspath(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    info = {"exported_from": "lowrank LoRA-GA", "layers": sorted(state)}
    (folder / "lowrank_lora_ga.json").write_text(json.dumps(info), encoding="utf-8")


def _pad_uninitialised(tensors: dict[str, torch.Tensor], done: set[str]) -> None:
    """Zero-pad layers without LoRA-GA state to rank 2r: ``[A; 0]``, ``[B, 0]``, same B A."""  # numpydoc ignore=PR01
    for key_A in [k for k in tensors if k.endswith(".lora_A.weight") and k not in done]:
        key_B = f"{key_A[: -len('lora_A.weight')]}lora_B.weight"
        A, B = tensors[key_A], tensors[key_B]
        tensors[key_A] = torch.cat([A, torch.zeros_like(A)], dim=0).contiguous()
        tensors[key_B] = torch.cat([B, torch.zeros_like(B)], dim=1).contiguous()


def _doubled_config(config: Any) -> Any:
    """PEFT config of the rank-2r export with the same scaling per layer."""  # numpydoc ignore=PR01,RT01
    config = copy.deepcopy(config)
    if config.use_rslora and (config.rank_pattern or config.alpha_pattern):
        msg = "export with rsLoRA and rank_pattern/alpha_pattern is not supported (as in PEFT)"
        raise ValueError(msg)
    config.init_lora_weights = True
    config.r *= 2
    config.lora_alpha *= 2**0.5 if config.use_rslora else 2
    config.rank_pattern = {k: 2 * v for k, v in (config.rank_pattern or {}).items()}
    config.alpha_pattern = {k: 2 * v for k, v in (config.alpha_pattern or {}).items()}
    if hasattr(config, "lora_ga_config"):
        config.lora_ga_config = None
    return config
