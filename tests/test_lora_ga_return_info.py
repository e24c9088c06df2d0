"""``lora_ga_init(return_info=...)`` takes bools (NumPy's included) and refuses anything else."""

from __future__ import annotations

import numpy as np
import pytest

import lowrank


def _grad() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((12, 8))


@pytest.mark.parametrize("flag", [True, np.True_])
def test_true_and_numpy_true_return_the_info(flag):
    out = lowrank.lora_ga_init(_grad(), 2, scaling=1.0, return_info=flag, rng=0)
    factors, info = out
    assert isinstance(factors, lowrank.LoraFactors)
    assert info.S.shape == (5,)


@pytest.mark.parametrize("flag", [False, np.False_])
def test_false_and_numpy_false_return_the_factors_only(flag):
    out = lowrank.lora_ga_init(_grad(), 2, scaling=1.0, return_info=flag, rng=0)
    assert isinstance(out, lowrank.LoraFactors)


@pytest.mark.parametrize("flag", [1, 0, None, "yes", 1.0, np.int64(1)])
def test_non_bools_are_refused_by_name(flag):
    with pytest.raises(TypeError, match=r"`return_info` must be a bool; got"):
        lowrank.lora_ga_init(_grad(), 2, scaling=1.0, return_info=flag, rng=0)
