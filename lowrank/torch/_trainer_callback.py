"""A ``transformers.TrainerCallback`` that writes a stock-PEFT LoRA-GA export at every save.

After a LoRA-GA init, ``save_pretrained`` (and so every Trainer checkpoint) already writes
the rank-2r export that fits the original base, next to the files needed to resume.
This callback additionally keeps one plain export per checkpoint in its own folder,
outside the ``checkpoint-*`` folders: the Trainer's checkpoint rotation does not delete
it, and ``resume_from_checkpoint`` never mistakes it for a second adapter.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._lora_ga_io import LoraGAInitial, export_lora_adapter

__all__ = ["lora_ga_export_callback"]

_CLASS: list[type] = []  # built on first use: importing lowrank.torch never imports transformers


def lora_ga_export_callback(
    state: dict[str, LoraGAInitial],
    export_dir: str | os.PathLike[str] | None = None,
    *,
    adapter: str = "default",
) -> Any:
    """Create a Trainer callback exporting a stock-PEFT adapter at every checkpoint save.

    Parameters
    ----------
    state : dict of str to LoraGAInitial
        What `lora_ga_init_` (or `lora_ga_init_trainer_`) returned for this model.
    export_dir : str or os.PathLike, optional
        Folder receiving one ``checkpoint-<step>`` export per save; default
        ``<output_dir>/lora_ga_export``.
    adapter : str, default "default"
        The PEFT adapter to export.

    Returns
    -------
    transformers.TrainerCallback
        Pass it to ``Trainer(callbacks=[...])`` or ``trainer.add_callback``. Only the
        main process (``state.is_world_process_zero``) writes.

    Raises
    ------
    TypeError
        If ``state`` is not a non-empty dict of `LoraGAInitial`, ``adapter`` is not a
        str or ``export_dir`` is not a path.

    Examples
    --------
    >>> import lowrank.torch as lt
    >>> lt.lora_ga_export_callback({})
    Traceback (most recent call last):
    ...
    TypeError: state must be the non-empty dict that lora_ga_init_ returned, got {}
    """
    if not (isinstance(state, dict) and state
            and all(isinstance(v, LoraGAInitial) for v in state.values())):
        msg = f"state must be the non-empty dict that lora_ga_init_ returned, got {state!r}"
        raise TypeError(msg)
    if not isinstance(adapter, str):
        raise TypeError(f"adapter must be a str, got {type(adapter).__name__}")
    if export_dir is not None and not isinstance(export_dir, (str, os.PathLike)):
        got = type(export_dir).__name__
        msg = f"export_dir must be a path (str or os.PathLike) or None, got {got}"
        raise TypeError(msg)
    if not _CLASS:
        _CLASS.append(_build_class())
    return _CLASS[0](dict(state), export_dir, adapter)


def _build_class() -> type:
    from transformers import TrainerCallback

    class LoRAGAExportCallback(TrainerCallback):  # type: ignore[misc]
        """Writes ``export_lora_adapter`` into ``<export_dir>/checkpoint-<step>`` on save."""

        def __init__(self, state: dict[str, LoraGAInitial], export_dir: Any, adapter: str):
            self.state, self.export_dir, self.adapter = state, export_dir, adapter

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:  # noqa: D102
            if not state.is_world_process_zero:
                return
            model = kwargs.get("model")
            if model is None:
                raise RuntimeError("the Trainer passed no model to on_save: nothing to export")
            model = getattr(model, "module", model)  # DDP-wrapped
            root = Path(self.export_dir) if self.export_dir is not None else (
                Path(args.output_dir) / "lora_ga_export")
            export_lora_adapter(model, self.state, root / f"checkpoint-{state.global_step}",
                                adapter=self.adapter)

    return LoRAGAExportCallback
