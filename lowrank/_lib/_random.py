"""Every random draw of the library: backend-native generators on the array's device.

Contract: the same ``rng`` seed gives the same result on the same backend and device.
Nothing is promised across backends. The global RNG state of NumPy, CuPy or torch is
never read or written.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from . import _compat

__all__ = ["Random", "check_rng"]


def check_rng(rng: Any, xp: Any = None, device: Any = None) -> None:
    """Raise TypeError unless ``rng`` is None, an int >= 0 or a known Generator.

    With the arrays' namespace ``xp`` (and ``device``) also refuse a backend generator
    that cannot draw for them: a torch.Generator for NumPy arrays, a cupy Generator
    for torch tensors, a CPU torch.Generator for CUDA tensors.
    """  # numpydoc ignore=PR01
    if rng is None or isinstance(rng, np.random.Generator):
        return
    if isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
        if int(rng) < 0:
            msg = f"`rng` seed must be >= 0; got {rng}"
            raise ValueError(msg)
        return
    family = _generator_family(rng)
    if family is None:
        msg = (
            "`rng` must be None, a non-negative int seed, a numpy.random.Generator, "
            f"a torch.Generator or a cupy.random.Generator; got {_describe(rng)}"
        )
        raise TypeError(msg)
    if xp is not None:
        _check_generator_fits(rng, family, _compat.backend_name(xp), device)


def _describe(rng: Any) -> str:
    """``repr`` for scalars (so ``True`` shows as ``True``), the type name otherwise."""  # numpydoc ignore=PR01,RT01
    if isinstance(rng, (bool, np.bool_, numbers.Number, str)):
        return f"{rng!r} ({type(rng).__name__})"
    return type(rng).__name__


def _generator_family(rng: Any) -> str | None:
    """"torch" or "cupy" for those libraries' Generators, else None."""  # numpydoc ignore=PR01,RT01
    top = type(rng).__module__.split(".")[0]
    if top in {"torch", "cupy"} and type(rng).__name__ == "Generator":
        return top
    return None


def _check_generator_fits(rng: Any, family: str, backend: str, device: Any) -> None:
    """Raise unless the ``family`` generator can draw for ``backend`` arrays on ``device``."""  # numpydoc ignore=PR01
    if family != backend:
        msg = (
            f"`rng` is a {family} Generator, which cannot draw for {backend} arrays; pass "
            "an int seed or a numpy.random.Generator (usable with every backend) instead"
        )
        raise TypeError(msg)
    if family == "torch" and device is not None:
        gen_type, arr_type = rng.device.type, getattr(device, "type", str(device))
        if gen_type != arr_type:
            msg = (f"`rng` is a torch.Generator on {rng.device}, but the tensors are on "
                   f"{device}; create it with torch.Generator(device={arr_type!r})")
            raise ValueError(msg)


def _seed_from(rng: Any) -> int:
    if rng is None:  # fresh OS entropy; never the global generators
        return int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0] >> 1)
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**62))
    seed = int(rng)
    if seed >= 2**64:  # torch/cupy take 64-bit seeds; SeedSequence hashes any size
        return int(np.random.SeedSequence(seed).generate_state(1, dtype=np.uint64)[0] >> 1)
    return seed


class Random:
    """Draws on namespace ``xp`` and ``device`` from ``rng`` (see module docstring)."""  # numpydoc ignore=PR01

    def __init__(self, rng: Any, xp: Any, device: Any) -> None:
        check_rng(rng, xp, device)
        self.xp, self.device = xp, device
        self.kind = _compat.backend_name(xp)
        if self.kind == "torch":
            self._gen = self._torch_generator(rng)
        elif self.kind == "cupy":
            import cupy  # lazy: only reached with CuPy inputs

            self._gen = rng if type(rng).__module__.startswith("cupy") else (
                cupy.random.default_rng(_seed_from(rng))
            )
        else:  # numpy, array-api-strict, others: host draws (the only host round trip)
            self.kind = "numpy" if self.kind == "numpy" else "host"
            self._gen = rng if isinstance(rng, np.random.Generator) else (
                np.random.default_rng(rng)
            )

    def _torch_generator(self, rng: Any) -> Any:
        import torch

        if isinstance(rng, torch.Generator):
            return rng
        gen = torch.Generator(device=self.device)
        gen.manual_seed(_seed_from(rng))
        return gen

    def _real(self, dtype: Any) -> Any:
        xp = self.xp
        if xp.isdtype(dtype, "complex floating"):
            return xp.float32 if dtype == xp.complex64 else xp.float64
        return dtype

    def _host(self, arr: np.ndarray, dtype: Any) -> Any:
        return self.xp.asarray(arr, dtype=dtype, device=self.device)

    def standard_normal(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """Standard normal draws (real even for complex ``dtype``; cast to it)."""  # numpydoc ignore=PR01,RT01
        real = self._real(dtype)
        if self.kind == "torch":
            import torch

            out = torch.randn(shape, generator=self._gen, dtype=real, device=self.device)
        elif self.kind == "cupy":
            out = self._gen.standard_normal(shape, dtype=real)
        else:
            npdt = np.float32 if real == self.xp.float32 else np.float64
            out = self._gen.standard_normal(shape, dtype=npdt)
            out = out if self.kind == "numpy" else self._host(out, real)
        return out if real == dtype else self.xp.astype(out, dtype)

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """Uniform draws on [0, 1)."""  # numpydoc ignore=PR01,RT01
        if self.kind == "torch":
            import torch

            return torch.rand(shape, generator=self._gen, dtype=dtype, device=self.device)
        if self.kind == "cupy":
            return self._gen.random(shape, dtype=dtype)
        npdt = np.float32 if dtype == self.xp.float32 else np.float64
        out = self._gen.random(shape, dtype=npdt)
        return out if self.kind == "numpy" else self._host(out, dtype)

    def permutation(self, n: int) -> Any:
        """A uniformly random permutation of ``0..n-1`` (int64 indices)."""  # numpydoc ignore=PR01,RT01
        if self.kind == "numpy":
            return self._gen.permutation(n)
        if self.kind == "host":
            return self._host(self._gen.permutation(n), self.xp.int64)
        if self.kind == "torch":
            import torch

            return torch.randperm(n, generator=self._gen, device=self.device)
        return self.xp.argsort(self.uniform((n,), self.xp.float64))
