"""Optional compiled kernels, installed as ``lowrank.kernels``. Not public API.

``KERNELS`` maps an operation name to ``{"numba": "module:attr", "cuda": "module:attr"}``.
It is plain data: importing this package imports neither numba nor cupy. The core
(``lowrank._lib._dispatch``) imports an entry on first use and caches it.

Kernel contract: inputs, caller-allocated outputs and Python scalars in; outputs written
in place; ``None`` returned (except ``gram_log_volume_one``, whose float result costs
less than an output array, ``gram_log_volume``, which returns how many matrices it left
to QR, and ``gram_log_volume_plan``, which returns a kernel for one shape); no
validation; results equal the ``_agnostic`` twin's within dtype tolerance.
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
    # Gram volumes of well-conditioned tall matrices: BLAS aᵀa, checked Cholesky
    "gram_log_volume": {
        "numba": "lowrank.kernels.volume_gram_numba:gram_log_volume",
    },
    # ... and its per-shape plan (the per-call decisions taken once)
    "gram_log_volume_plan": {
        "numba": "lowrank.kernels.volume_gram_numba:gram_log_volume_plan",
    },
    # the same route for one matrix: it returns its result (a float, NaN if rejected)
    # instead of writing an array
    "gram_log_volume_one": {
        "numba": "lowrank.kernels.volume_gram_single_numba:gram_log_volume_one",
    },
}


def _hand_over_top_level_name() -> None:
    """Stand aside when this source folder is imported as a top-level ``kernels``.

    Running Python from the repository root puts the root on ``sys.path``, where this
    folder shadows the unrelated PyPI package ``kernels`` (which ``transformers`` imports).
    Load that package in our place, or fail as if no ``kernels`` were installed; never
    serve lowrank's kernels under the top-level name.
    """
    import importlib.machinery
    import importlib.util
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
    spec = importlib.machinery.PathFinder.find_spec("kernels", path)
    if spec is None or spec.loader is None:
        del sys.modules["kernels"]
        raise ModuleNotFoundError(
            "No module named 'kernels' (the folder found is lowrank's kernel sources, "
            "importable only as lowrank.kernels)", name="kernels"
        )
    module = importlib.util.module_from_spec(spec)
    # the import system returns what sys.modules holds once this module has run
    sys.modules["kernels"] = module
    spec.loader.exec_module(module)


if __name__ == "kernels":
    _hand_over_top_level_name()
