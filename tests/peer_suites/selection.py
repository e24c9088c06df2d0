"""Which peer tests run against lowrank, which do not and why, which fail because of lowrank.

Patterns are ``fnmatch`` patterns on the node id without its file part
(``Class::test_name[params]``). A peer test runs if it matches a ``run`` pattern and no
``deselect`` pattern; every other test of the module is deselected as not reaching the
patched solver (``--peer-audit`` re-checks that claim). Each reason is explained in
README.md next to this file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SVDS_MODULE = "scipy.sparse.linalg._eigen.tests.test_svds"

NOT_REACHING_LOWRANK = "does not call the patched solver (tests other peer code)"

# reasons, shared by several tests
MESSAGE_TEXT = "asserts the peer's own error/warning text or its validation of peer-only options"
RANDOM_STREAM = "asserts the peer's random stream (results tied to its host NumPy draws / rng)"
NO_NORMALIZER = "asserts the peer's unnormalised power iteration; lowrank always orthonormalises"
SMALLEST = "which='SM' (smallest singular values): lowrank computes the largest only"
SVDS_ONLY_OPTION = "asserts the effect of svds-only options (tol, v0) lowrank does not have"
DENSE_ONLY = "truncated_svd takes dense arrays; sparse/LinearOperator go to lowrank_randomized"
CONVERGED = ("asserts svds's converged accuracy (2e-7 on singular vectors of a flat spectrum);"
             " randomized_svd makes a fixed number of passes")
ZERO_MATRIX = ("its integer cast of the test matrix is the zero matrix, whose singular vectors are"
               " arbitrary; the test compares them with LAPACK's particular choice")
PEER_VALIDATION = "rejected by the peer's own parameter validation before the solver is called"


@dataclass(frozen=True)
class Peer:
    """The selection for one peer test module."""

    run: tuple[str, ...]
    deselect: dict[str, str] = field(default_factory=dict)
    # known lowrank failures of the block Krylov method (the default "auto")
    xfail: dict[str, str] = field(default_factory=dict)


_EXTMATH = Peer(
    run=("test_randomized_*",),
    deselect={
        "test_randomized_svd_low_rank_all_dtypes[[]int*": ZERO_MATRIX,
        "test_randomized_svd_power_iteration_normalizer": NO_NORMALIZER,
        "test_randomized_svd_sparse_warnings*": MESSAGE_TEXT,
        # sklearn draws its Gaussian sketch with NumPy on the host for every namespace, so
        # its torch result equals its NumPy result; lowrank draws with torch's generator
        "test_randomized_range_finder_array_api_compliance*torch*": RANDOM_STREAM,
    },
)

_PCA = Peer(
    run=("*randomized*",),
    deselect={
        "test_too_many_components*": PEER_VALIDATION,
        "test_sparse_pca_solver_error*": PEER_VALIDATION,
        "test_pca_validation*": PEER_VALIDATION,
        "test_n_components_mle_error*": PEER_VALIDATION,
        "test_array_api_error_and_warnings_on_unsupported_params": MESSAGE_TEXT,
    },
)

_TRUNCATED_SVD = Peer(
    run=("*randomized*", "test_attributes*", "test_sparse_formats*", "test_integers"),
    deselect={"test_too_many_components*": PEER_VALIDATION},
)

_SVDS_DESELECT = {
    "*::test_svds_input_validation_*": MESSAGE_TEXT,
    "*::test_svds_diff0_docstring_example": SMALLEST,
    "*::test_svds_int_A[[]SM[]]": SMALLEST,
    "*::test_svds_parameter_k_which[[]SM-*": SMALLEST,
    "*::test_svd_linop": SMALLEST,
    "*::test_small_sigma2*": SMALLEST,
    "*::test_small_sigma_sparse*": SMALLEST,
    "*::test_svds_parameter_tol": SVDS_ONLY_OPTION,
    "*::test_svd_v0": SVDS_ONLY_OPTION,
    # truncated_svd draws nothing: "different rng, different result" cannot hold
    "Test_SVDS_LOWRANK_EXACT::test_svd_rng": RANDOM_STREAM,
    "Test_SVDS_LOWRANK_EXACT::test_svd_rng_3": RANDOM_STREAM,
    "Test_SVDS_LOWRANK_EXACT::test_svd_simple[[]csc_array-*": DENSE_ONLY,
    "Test_SVDS_LOWRANK_EXACT::test_svd_simple[[]aslinearoperator-*": DENSE_ONLY,
    "Test_SVDS_LOWRANK_RANDOMIZED::test_svd_rng_3": CONVERGED,
}

PEERS: dict[str, Peer] = {
    "sklearn.utils.tests.test_extmath": _EXTMATH,
    "sklearn.decomposition.tests.test_pca": _PCA,
    "sklearn.decomposition.tests.test_truncated_svd": _TRUNCATED_SVD,
    SVDS_MODULE: Peer(run=("Test_SVDS_LOWRANK_*",), deselect=_SVDS_DESELECT),
}
