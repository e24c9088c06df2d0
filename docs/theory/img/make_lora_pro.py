"""Regenerate ``lora_pro_training.png``: ``python docs/theory/img/make_lora_pro.py``.

Loss curves of full fine-tuning, plain LoRA, LoRA-GA and LoRA-GA + LoRA-Pro on the
small linear task of ``lowrank._demo.lora_pro`` (SGD and AdamW, 60 steps, r = 4).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import torch

from lowrank._demo.lora_pro import plot_curves, tracking_gap, training_curves


def main() -> None:
    torch.set_num_threads(1)
    curves = training_curves(60)
    for optimizer, runs in curves.items():
        full = runs["full fine-tuning"]
        for name, curve in runs.items():
            gap = tracking_gap(curve, full)
            print(f"{optimizer:5s} {name:32s} gap {gap:.3f} final {curve[-1]:.3g}")
    fig = plot_curves(plt, curves)
    fig.savefig(Path(__file__).with_name("lora_pro_training.png"), dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
