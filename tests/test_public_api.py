"""Public API housekeeping: __all__ complete and sorted, no placeholders left."""

from __future__ import annotations

import inspect

import lowrank


def test_all_sorted_and_unique():
    assert lowrank.__all__ == sorted(set(lowrank.__all__))


def test_all_names_exist_and_are_documented():
    for name in lowrank.__all__:
        obj = getattr(lowrank, name)
        assert inspect.getdoc(obj), name


def test_public_callables_in_all():
    public = {
        n for n, o in vars(lowrank).items()
        if not n.startswith("_") and (inspect.isfunction(o) or inspect.isclass(o))
    }
    assert public <= set(lowrank.__all__)


def test_functions_have_xp_keyword_last_when_array_api():
    for name in lowrank.__all__:
        obj = getattr(lowrank, name)
        if not inspect.isfunction(obj):
            continue
        params = list(inspect.signature(obj).parameters.values())
        if "xp" in [p.name for p in params]:
            assert params[-1].name == "xp", name
            assert params[-1].kind is inspect.Parameter.KEYWORD_ONLY, name
