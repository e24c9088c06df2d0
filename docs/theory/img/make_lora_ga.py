"""Make ``lora_ga_loss.png``: training loss of full fine-tuning, LoRA and LoRA-GA.

LoRA-GA appears twice: with the default (``compat="peft"``, PEFT's scaling) and with
``compat="paper"`` (the official code's scaling, much larger offsets).

Run from the repository root: ``python docs/theory/img/make_lora_ga.py`` (needs torch,
peft and matplotlib). The task is the teacher-student MLP of the ``lowrank demo``
LoRA-GA section and of ``tests/test_torch_lora_ga.py``.
"""

from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt

from lowrank._demo.lora_ga import _loss_curves

curves = _loss_curves(quick=False)
fig, ax = plt.subplots(figsize=(5.5, 3.4))
for name, losses in curves.items():
    ax.semilogy(losses, label=name)
ax.set_xlabel("SGD step (full batch, lr 0.2)")
ax.set_ylabel("training loss (MSE)")
ax.set_title("teacher-student MLP 32-64-16, rank-2 teacher shift")
ax.legend()
fig.savefig(Path(__file__).with_name("lora_ga_loss.png"), dpi=110, bbox_inches="tight")
