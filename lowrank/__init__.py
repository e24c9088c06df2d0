"""lowrank: low-rank approximation and the linear algebra around it.

Optimal and randomized SVD, CR (column-row) sampled products, Gram volumes of
non-square matrices, LoRA-GA initialisation and LoRA-Pro gradient alignment, written
against the Python array API (NumPy, PyTorch, CuPy, array-api-strict).

``import lowrank`` imports neither torch, cupy nor numba; compiled kernels load on
first use. The PyTorch/PEFT utilities live in ``lowrank.torch``.
"""

from __future__ import annotations

from . import _cr, _lora_ga, _lora_one, _lora_pro, _randomized, _svd, _svd_approx, _volume
from ._config import config_context as config_context
from ._config import get_config as get_config
from ._cr import *  # noqa: F403
from ._lora_ga import *  # noqa: F403
from ._lora_one import *  # noqa: F403
from ._lora_pro import *  # noqa: F403
from ._randomized import *  # noqa: F403
from ._svd import *  # noqa: F403
from ._svd_approx import *  # noqa: F403
from ._volume import *  # noqa: F403

__version__ = "0.1.0"

# Each topical module owns its ``__all__``; the package's is their sorted union.
__all__ = sorted(
    {
        "config_context",
        "get_config",
        *_cr.__all__,
        *_lora_ga.__all__,
        *_lora_one.__all__,
        *_lora_pro.__all__,
        *_randomized.__all__,
        *_svd.__all__,
        *_svd_approx.__all__,
        *_volume.__all__,
    }
)
