"""Optional compiled kernels, installed as ``lowrank.kernels``. Not public API.

``KERNELS`` maps an operation name to ``{"numba": "module:attr", "cuda": "module:attr"}``.
It is plain data: importing this package imports neither numba nor cupy. The core
(``lowrank._lib._dispatch``) imports an entry on first use and caches it.

Kernel contract: inputs, caller-allocated outputs and Python scalars in; outputs written
in place; ``None`` returned; no validation; results equal the ``_agnostic`` twin's within
dtype tolerance.
"""

KERNELS: dict[str, dict[str, str]] = {
    # self-test kernel of the dispatch layer (tests/test_dispatch.py)
    "axpy": {
        "numba": "lowrank.kernels.util_numba:axpy",
        "cuda": "lowrank.kernels.util_cuda:axpy",
    },
    # CR sampling: fused norm pass, gather-and-scale
    "cr_norms": {
        "numba": "lowrank.kernels.cr_numba:cr_norms",
        "cuda": "lowrank.kernels.cr_cuda:cr_norms",
    },
    "cr_gather_scale": {
        "numba": "lowrank.kernels.cr_numba:cr_gather_scale",
        "cuda": "lowrank.kernels.cr_cuda:cr_gather_scale",
    },
    # Gram volumes: batched small QR
    "log_gram_volume": {
        "numba": "lowrank.kernels.volume_numba:log_gram_volume",
        "cuda": "lowrank.kernels.volume_cuda:log_gram_volume",
    },
}
