"""pytest plugin: run scikit-learn's and SciPy's own tests with their solvers on lowrank.

Loaded with ``-p tests.peer_suites.plugin`` and ``-c tests/peer_suites/pytest.ini``:

- at configure time, scikit-learn's ``randomized_svd`` / ``randomized_range_finder``
  (and the private ``_randomized_svd`` its PCA and TruncatedSVD call) are replaced by
  the adapters of :mod:`tests.peer_suites.adapters`; SciPy's test module for ``svds``
  gets two more solver classes whose ``solver`` values route ``svds`` to lowrank;
- at collection, only the tests listed in :mod:`tests.peer_suites.selection` run, the
  documented ones are deselected, the known lowrank failures are marked
  ``xfail(strict=True)``;
- every selected test must call an adapter at least once, else it fails;
- ``--peer-audit`` runs every test of the peer modules instead and reports which ones
  reach lowrank, to keep the selection honest.
"""

from __future__ import annotations

import collections
import fnmatch
import importlib
from typing import Any

import pytest

from . import adapters, selection

_PATCHES: list[tuple[Any, str, Any]] = []
_CALLED = pytest.StashKey[int]()
_AUDIT: dict[str, int] = {}
_MODULE_OF: dict[str, str] = {}  # node id -> peer module, for the summary


def pytest_addoption(parser: Any) -> None:  # numpydoc ignore=PR01
    """``--peer-audit`` and ``--lowrank-method``."""
    parser.addoption("--peer-audit", action="store_true",
                     help="run all tests of the peer modules and report which reach lowrank")
    parser.addoption("--lowrank-method", default="auto",
                     choices=("auto", "block_krylov", "subspace"),
                     help="`method` of lowrank.randomized_svd behind the adapters")


def _patch(module_name: str, attr: str, value: Any) -> None:  # numpydoc ignore=PR01
    """Replace ``module.attr`` and remember the original."""
    module = importlib.import_module(module_name)
    _PATCHES.append((module, attr, getattr(module, attr)))
    setattr(module, attr, value)


def _svds_class(base: type, solver: str) -> type:  # numpydoc ignore=PR01,RT01
    """SciPy's common svds tests with ``self.solver = solver``."""

    def setup_method(self: Any) -> None:
        self.solver = solver

    name = "Test_SVDS_" + solver.upper()
    return type(name, (base,), {"setup_method": setup_method, "__module__": base.__module__})


def pytest_configure(config: Any) -> None:  # numpydoc ignore=PR01
    """Point the peers' solvers at lowrank before their test modules are imported."""
    adapters.OPTIONS["method"] = config.getoption("--lowrank-method")
    for module in ("sklearn.utils.extmath", "sklearn.decomposition"):
        _patch(module, "randomized_svd", adapters.sklearn_randomized_svd)
    _patch("sklearn.utils.extmath", "randomized_range_finder",
           adapters.sklearn_randomized_range_finder)
    for module in ("sklearn.utils.extmath", "sklearn.decomposition._pca",
                   "sklearn.decomposition._truncated_svd"):
        _patch(module, "_randomized_svd", adapters.sklearn_randomized_svd)
    svds_tests = importlib.import_module(selection.SVDS_MODULE)
    _patch(selection.SVDS_MODULE, "svds", adapters.routed_svds(svds_tests.svds))
    for solver in adapters.SVDS_SOLVERS:
        cls = _svds_class(svds_tests.SVDSCommonTests, solver)
        setattr(svds_tests, cls.__name__, cls)
        _PATCHES.append((svds_tests, cls.__name__, None))


def pytest_unconfigure(config: Any) -> None:  # numpydoc ignore=PR01
    """Restore the peers' functions."""
    del config
    while _PATCHES:
        module, attr, original = _PATCHES.pop()
        if original is None:
            delattr(module, attr)
        else:
            setattr(module, attr, original)


def _name_in_module(item: Any) -> str:  # numpydoc ignore=PR01,RT01
    """``Class::test[params]`` part of the node id."""
    return "::".join(item.nodeid.split("::")[1:])


def _first_match(name: str, table: dict[str, str]) -> str | None:  # numpydoc ignore=PR01,RT01
    """Reason of the first pattern of ``table`` matching ``name``, else None."""
    for pattern, reason in table.items():
        if fnmatch.fnmatchcase(name, pattern):
            return reason
    return None


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:  # numpydoc ignore=PR01
    """Keep the selected peer tests, mark the known lowrank failures."""
    keep, drop = [], []
    reasons: collections.Counter[str] = collections.Counter()
    for item in items:
        peer = selection.PEERS.get(getattr(item.module, "__name__", ""))
        if peer is None:
            keep.append(item)
            continue
        name = _name_in_module(item)
        reason = (None if config.getoption("--peer-audit") else _deselection(peer, name))
        if reason is not None:
            drop.append(item)
            reasons[(item.module.__name__, reason)] += 1
            continue
        _MODULE_OF[item.nodeid] = item.module.__name__
        xfail = _first_match(name, peer.xfail)
        if xfail is not None and adapters.OPTIONS["method"] != "subspace":
            item.add_marker(pytest.mark.xfail(strict=True, reason=xfail))
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    config.stash[_REASONS] = reasons


_REASONS = pytest.StashKey[collections.Counter]()


def _deselection(peer: selection.Peer, name: str) -> str | None:  # numpydoc ignore=PR01,RT01
    """Why ``name`` does not run, or None if it runs."""
    reason = _first_match(name, peer.deselect)
    if reason is not None:
        return reason
    if any(fnmatch.fnmatchcase(name, p) for p in peer.run):
        return None
    return selection.NOT_REACHING_LOWRANK


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: Any) -> Any:  # numpydoc ignore=PR01,RT01
    """Fail a selected peer test that passed without ever calling lowrank."""
    before = sum(adapters.CALLS.values())
    result = yield
    module = getattr(item.module, "__name__", "")
    if module not in selection.PEERS and not module.rpartition(".")[2].startswith("check_"):
        return result
    calls = sum(adapters.CALLS.values()) - before
    if item.config.getoption("--peer-audit"):
        _AUDIT[item.nodeid] = calls
    elif calls == 0:
        msg = (f"{_name_in_module(item)} never called a lowrank adapter: it tests the peer's "
               "own code, so it must be deselected in tests/peer_suites/selection.py")
        raise AssertionError(msg)
    return result


def pytest_terminal_summary(terminalreporter: Any, config: Any) -> None:  # numpydoc ignore=PR01
    """Deselections by reason; in audit mode, the tests that reach lowrank."""
    write = terminalreporter.write_line
    outcomes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for outcome in ("passed", "failed", "xfailed", "xpassed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            module = _MODULE_OF.get(getattr(report, "nodeid", ""))
            if module is not None and getattr(report, "when", "call") in ("call", "setup"):
                outcomes[module][outcome] += 1
    if outcomes:
        terminalreporter.section("peer tests run against lowrank, by outcome")
        for module, counts in sorted(outcomes.items()):
            write(f"{module}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    reasons = config.stash.get(_REASONS, None)
    if reasons:
        terminalreporter.section("peer tests deselected, by reason")
        for (module, reason), count in sorted(reasons.items()):
            write(f"{count:5d}  {module}: {reason}")
    if config.getoption("--peer-audit"):
        terminalreporter.section("peer audit: adapter calls per test")
        for nodeid, calls in _AUDIT.items():
            write(f"{calls:4d}  {nodeid.split('/')[-1]}")
