"""LoRA-GA inside a Hugging Face ``Trainer``: the gradient pre-pass, the init, honest saving.

The pre-pass reads the trainer's own dataloader and loss, so the gradients are those of
the training objective (and, under an initialised process group, ``estimate_gradients``
all-reduces them, so every rank gets the same init). LoRA-GA replaces the base weight by
``W - s B0 A0``; an adapter saved by stock PEFT fits only that modified base. After the
init (`lora_ga_init_` does this for any PEFT model), ``save_pretrained`` of the model
(which ``Trainer.save_model`` and checkpointing call) writes the rank-2r adapter of
`export_lora_adapter`, which stock PEFT loads on the original base, plus the rank-r
adapter and the initial factors under lowrank's own file names, which the model's
``load_adapter`` (what ``resume_from_checkpoint`` calls) reads back.
"""

from __future__ import annotations

import itertools
from typing import Any

from ._lora_ga import estimate_gradients, lora_ga_init_
from ._lora_ga_dist import unwrap

__all__ = ["lora_ga_init_trainer_"]


def lora_ga_init_trainer_(trainer: Any, *, n_batches: int = 8, **options: Any) -> dict[str, Any]:
    """Estimate gradients with a ``transformers.Trainer``'s data and loss, then LoRA-GA init.

    Call it after building the trainer and before ``trainer.train()``. Batches come from
    ``trainer.get_train_dataloader()`` (moved to the device by the trainer), the loss
    from ``trainer.compute_loss``. Afterwards the model's ``save_pretrained`` writes the
    trained adapter as a plain rank-2r LoRA for the unmodified base (see
    `export_lora_adapter`), so ``trainer.save_model()`` and checkpoints load with stock
    ``PeftModel.from_pretrained(original_base, path)``. Each checkpoint also holds the
    rank-r adapter being trained and the initial factors, so
    ``trainer.train(resume_from_checkpoint=...)`` continues exactly in the same
    process; in a new one, rebuild the model first with ``apply_lora_ga_offset_(model,
    load_lora_ga_init(checkpoint / "lowrank_lora_ga_init.pt"))`` (a model initialised
    differently is refused by name).

    Parameters
    ----------
    trainer : transformers.Trainer
        A trainer (TRL's trainers subclass it) whose model is a PEFT LoRA model.
    n_batches : int, default 8
        Training batches used for the gradient estimate (> 0).
    **options
        Passed to `lora_ga_init_` (``scale``, ``compat``, ``rng``, ...).

    Returns
    -------
    dict of str to LoraGAInitial
        The initial factors per layer, as `lora_ga_init_` returns them.

    Raises
    ------
    ValueError
        If `n_batches` is not a positive integer, or as `lora_ga_init_`.
    """
    if isinstance(n_batches, bool) or not isinstance(n_batches, int) or n_batches < 1:
        msg = f"`n_batches` must be a positive integer; got {n_batches!r}"
        raise ValueError(msg)
    model = unwrap(trainer.model)
    loader = trainer.get_train_dataloader()
    batches = (trainer._prepare_inputs(b) for b in itertools.islice(loader, n_batches))
    grads = estimate_gradients(
        model, batches, loss_fn=lambda m, b: trainer.compute_loss(m, b), progress=False
    )
    return lora_ga_init_(model, grads, **options)

