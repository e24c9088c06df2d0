"""Saving a LoRA-GA-initialised PEFT model honestly, and resuming Trainer checkpoints.

LoRA-GA replaces each base weight ``W`` by ``W - s B0 A0``. PEFT's own ``save_pretrained``
writes the rank-r adapter, which fits only that modified base: loaded on the original
base, the model is wrong. After an init, the model's ``save_pretrained`` is replaced
(on the instance) by `ExportingSave`, which writes instead:

- ``adapter_config.json`` + ``adapter_model.safetensors``: the rank-2r export of
  `export_lora_adapter`, a plain LoRA that stock PEFT loads on the ORIGINAL base;
- ``lowrank_lora_ga_resume.safetensors``: the rank-r adapter being trained (PEFT's
  keys) and ``lowrank_lora_ga_init.pt``: the initial factors, so a checkpoint can be
  resumed. These names are not PEFT's, so neither PEFT nor the Trainer read them.

``load_adapter`` is replaced by `ResumingLoad`: on a folder holding the resume file, it
loads the rank-r adapter into the current (modified) model, which is what the Trainer's
``resume_from_checkpoint`` calls, after checking that the folder was saved from the same
initial factors. Both are plain module-level callables holding the model, so they
survive ``copy.deepcopy`` and pickling of the model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ._lora_ga_io import LoraGAInitial, export_lora_adapter, load_lora_ga_init, save_lora_ga_init

__all__ = ["ExportingSave", "ResumingLoad", "install_lora_ga_saving"]

RESUME_FILE = "lowrank_lora_ga_resume.safetensors"
INIT_FILE = "lowrank_lora_ga_init.pt"
_OPT_OUT = "lowrank_allow_modified_base"


def install_lora_ga_saving(model: Any, state: dict[str, LoraGAInitial]) -> None:
    """Make ``model.save_pretrained``/``load_adapter`` LoRA-GA aware (PEFT models only).

    A second call (another adapter) adds its layers to the state already installed.
    """  # numpydoc ignore=PR01
    if not (hasattr(model, "peft_config") and hasattr(type(model), "save_pretrained")):
        return  # explicit (weight, A, B, s) tuples or a bare LoRA model: nothing to save
    saver = model.__dict__.get("save_pretrained")
    if isinstance(saver, ExportingSave):
        saver.state.update(state)
    else:
        saver = ExportingSave(model, dict(state))
        object.__setattr__(model, "save_pretrained", saver)
    object.__setattr__(model, "load_adapter", ResumingLoad(model, saver.state))


def _adapter_layers(state: dict[str, LoraGAInitial], adapter: str) -> dict[str, LoraGAInitial]:
    return {k: v for k, v in state.items() if k.endswith(f".{adapter}")}


def _folder(save_directory: Any, adapter: str) -> Path:
    # PEFT's layout: "default" at the top, other adapters in a subfolder of their name
    root = Path(os.fspath(save_directory))
    return root if adapter == "default" else root / adapter


class ExportingSave:
    """``save_pretrained`` of a LoRA-GA-initialised PEFT model.

    Writes, per adapter with LoRA-GA layers, the rank-2r export for the original base
    plus the files to resume training (see the module docstring); adapters without
    LoRA-GA layers are saved by PEFT as usual. ``safe_serialization`` is ignored (the
    export is always safetensors) and non-main processes write nothing, as in PEFT.
    ``lowrank_allow_modified_base=True`` (the rank-r adapter for the modified base,
    knowingly) runs PEFT's ``save_pretrained`` unchanged, and so does
    ``path_initial_model_for_weight_conversion`` (PEFT's own conversion, also exact)
    with a rank-r initial adapter; an initial folder written by this class holds the
    export, which PEFT cannot read, so the export is written directly instead, after
    checking that folder's initial factors against the model's.
    """  # numpydoc ignore=PR01

    def __init__(self, model: Any, state: dict[str, LoraGAInitial]) -> None:
        self.model = model
        self.state = state

    def __call__(  # numpydoc ignore=PR01
        self, save_directory: Any, *args: Any, **kwargs: Any
    ) -> None:
        """Save as described in the class docstring."""
        model = self.model
        stock = type(model).save_pretrained
        allow = kwargs.pop(_OPT_OUT, False)
        if not isinstance(allow, bool):
            msg = f"`{_OPT_OUT}` must be a bool; got {allow!r}"
            raise TypeError(msg)
        initial = kwargs.get("path_initial_model_for_weight_conversion")
        if initial is not None and (Path(os.fspath(initial)) / INIT_FILE).is_file():
            # an initial adapter saved by this class is the rank-2r export, which PEFT's
            # conversion cannot read (and PEFT would overwrite its config first); the
            # export written here is what that conversion computes: [A; A0], [B, -B0]
            ResumingLoad.check_same_init(Path(os.fspath(initial)), self.state)
            kwargs.pop("path_initial_model_for_weight_conversion")
        elif allow or initial is not None:
            stock(model, save_directory, *args, **kwargs)
            return
        names = ["safe_serialization", "selected_adapters", "save_embedding_layers"]
        kwargs.update(zip([*names, "is_main_process"], args, strict=False))
        if not kwargs.get("is_main_process", True):
            return
        if Path(os.fspath(save_directory)).is_file():
            where = os.fspath(save_directory)
            msg = f"`save_directory` must be a directory, not a file; got {where!r}"
            raise ValueError(msg)
        selected = kwargs.pop("selected_adapters", None) or list(model.peft_config)
        plain = [a for a in selected if not _adapter_layers(self.state, a)]
        if plain:
            stock(model, save_directory, selected_adapters=plain, **kwargs)
        for adapter in selected:
            layers = _adapter_layers(self.state, adapter)
            if layers:
                self._save_adapter(save_directory, adapter, layers, kwargs.get("state_dict"))

    def _save_adapter(
        self, root: Any, adapter: str, layers: dict[str, LoraGAInitial], state_dict: Any
    ) -> None:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        folder = _folder(root, adapter)
        # the Trainer passes its own state_dict (gathered under FSDP, for example): both
        # files are read from it, as PEFT's own save would
        export_lora_adapter(self.model, layers, folder, adapter=adapter, state_dict=state_dict)
        tensors = get_peft_model_state_dict(self.model, state_dict=state_dict, adapter_name=adapter)
        tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
        save_file(tensors, os.fspath(folder / RESUME_FILE), metadata={"format": "pt"})
        save_lora_ga_init(layers, folder / INIT_FILE)

    def __repr__(self) -> str:
        name, n = type(self.model).__name__, len(self.state)
        return f"<LoRA-GA save_pretrained of {name} ({n} layers)>"


class ResumingLoad:
    """``load_adapter`` that resumes a LoRA-GA checkpoint written by `ExportingSave`.

    On a folder with ``lowrank_lora_ga_resume.safetensors`` it loads that rank-r adapter
    into the current model's adapter of the same name, after checking that the folder's
    initial factors equal this model's (bitwise): otherwise the weights would sit on a
    different modified base. Anything else goes to PEFT's ``load_adapter``.
    """  # numpydoc ignore=PR01

    def __init__(self, model: Any, state: dict[str, LoraGAInitial]) -> None:
        self.model = model
        self.state = state

    def __call__(  # numpydoc ignore=PR01,RT01
        self, model_id: Any, adapter_name: str = "default", *args: Any, **kwargs: Any
    ) -> Any:
        """Load as described in the class docstring."""
        folder = Path(os.fspath(model_id)) / kwargs.get("subfolder", "")
        layers = _adapter_layers(self.state, adapter_name)
        if not (folder / RESUME_FILE).is_file() or not layers:
            stock = type(self.model).load_adapter
            return stock(self.model, model_id, adapter_name, *args, **kwargs)
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        self.check_same_init(folder, layers, adapter_name)
        device = next(iter(layers.values())).A.device
        tensors = load_file(os.fspath(folder / RESUME_FILE), device=str(device))
        return set_peft_model_state_dict(self.model, tensors, adapter_name=adapter_name)

    @staticmethod
    def check_same_init(
        folder: Path, state: dict[str, LoraGAInitial], adapter: str | None = None
    ) -> None:
        """Raise unless the folder's initial factors equal `state`'s (for `adapter`)."""  # numpydoc ignore=PR01
        saved = load_lora_ga_init(folder / INIT_FILE)
        layers = state if adapter is None else _adapter_layers(state, adapter)
        who = "the model's adapters" if adapter is None else f"adapter {adapter!r} of this model"
        # all adapters: the folder may hold a subset; one adapter: exactly its layers
        wanted = layers.keys()
        keys_ok = saved.keys() <= wanted if adapter is None else saved.keys() == wanted
        same = keys_ok and all(
            torch.equal(v.A, layers[k].A.cpu()) and torch.equal(v.B, layers[k].B.cpu())
            for k, v in saved.items()
        )
        if not same:
            msg = (
                f"{os.fspath(folder)!r} was saved from a different LoRA-GA init than "
                f"{who}; its rank-r weights fit only their own modified base. "
                f"Rebuild the model from the original base with apply_lora_ga_offset_(model, "
                f"load_lora_ga_init({os.fspath(folder / INIT_FILE)!r})) and load again"
            )
            raise ValueError(msg)

    def __repr__(self) -> str:
        return f"<LoRA-GA load_adapter of {type(self.model).__name__}>"
