"""PyTorch / PEFT integration: LoRA-GA initialisation of real models and LoRA-Pro optimizers.

Needs the ``torch`` extra (``pip install lowrank[torch]``); PEFT is optional. The maths
lives in the array-API core (``lowrank.lora_ga_init``, ``lowrank.lora_pro_adjust``);
this package only finds layers, moves gradients and applies results.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    msg = "lowrank.torch needs PyTorch: pip install 'lowrank[torch]'"
    raise ImportError(msg) from exc

from . import _lora_ga, _lora_pro
from ._grad_svd import GradientSVD as GradientSVD
from ._grad_svd import estimate_gradient_svd as estimate_gradient_svd
from ._grad_svd_residual import lora_ga_init_residual_ as lora_ga_init_residual_
from ._layers import LoraPair as LoraPair
from ._layers import find_lora_pairs as find_lora_pairs
from ._lora_ga import *  # noqa: F403
from ._lora_one import lora_one_init_ as lora_one_init_
from ._lora_pro import *  # noqa: F403
from ._trainer import lora_ga_init_trainer_ as lora_ga_init_trainer_
from ._trainer_callback import lora_ga_export_callback as lora_ga_export_callback

__all__ = sorted(
    {
        "GradientSVD",
        "LoraPair",
        "estimate_gradient_svd",
        "find_lora_pairs",
        "lora_ga_init_residual_",
        "lora_ga_export_callback",
        "lora_ga_init_trainer_",
        "lora_one_init_",
        *_lora_ga.__all__,
        *_lora_pro.__all__,
    }
)
