"""Gradient sketch (``estimate_gradient_svd``) against the exact path and PEFT's LoRA-GA.

asv classes time and track a small stack; run as a script for the one-run report on a
synthetic stack of 4096 x 4096 and 4096 x 11008 layers (and on all-MiniLM-L6-v2 when
its wheel is installed)::

    python bench/bench_grad_sketch.py            # full report
    python bench/bench_grad_sketch.py --quick    # 1024-wide stack, for a smoke run

Peak memory: each method runs in a fresh process with glibc's mmap threshold pinned and
MKL's buffer cache off (``MKL_DISABLE_FAST_MM=1``), so that freed blocks leave the
process and the peak is what the method allocates, not what allocators keep; the same
method first runs once on a 256-wide stack (library code and first-call setup stay out
of the peak, as every method's would). The peak resident set is then reset, with the
model and batches in memory, and the reported peak is its growth during the estimation,
with and without that of a plain frozen forward+backward (the working set any
estimation has). ``--mkl-cache`` keeps MKL's default cache (on the 4096 stack it moved
the peaks by 1-2 MiB either way: the frozen backward's up, the sketch's down).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from typing import Any

R, BLOCK, SWEEPS = 8, 16, 3  # LoRA rank 8: 2r = 16 triplets; ℓ = 16 per product, 48 in all


def _model(width: int, ffn: int, seed: int = 0) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Linear(width, width), torch.nn.Tanh(), torch.nn.Linear(width, ffn),
            torch.nn.Tanh(), torch.nn.Linear(ffn, width))


def _batches(width: int, n: int = 4, tokens: int = 64, seed: int = 1) -> list[Any]:
    """Inputs with a power-law covariance (spectrum i^-1), targets a fixed map of them."""  # numpydoc ignore=PR01,RT01
    import torch

    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(width, width, generator=g))[0]
    mix = basis / torch.arange(1, width + 1, dtype=torch.float32)[:, None] * 8
    proj = torch.randn(width, width, generator=g) / math.sqrt(width)
    out = []
    for _ in range(n):
        x = torch.randn(tokens, width, generator=g) @ mix
        out.append((x, torch.tanh(x @ proj)))
    return out


def _loss(model: Any, batch: Any) -> Any:
    import torch

    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


TARGETS = ["0", "2", "4"]


def _peft(model: Any) -> Any:
    import peft
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return peft.get_peft_model(model, peft.LoraConfig(r=R, lora_alpha=2 * R,
                                                          target_modules=TARGETS))


def _run(method: str, model: Any, data: list[Any]) -> Any:
    """One estimation (and init, for ``*_init``); returns gradients or SVDs."""  # numpydoc ignore=PR01,RT01
    import lowrank.torch as lt

    if method == "plain":  # frozen forward + backward: autograd's own working set
        model.requires_grad_(False)
        for x, y in data:
            _loss(model, (x.detach().requires_grad_(True), y)).backward()
        return None
    if method in ("exact", "exact_init"):
        grads = lt.estimate_gradients(model, data, loss_fn=_loss, progress=False)
        if method == "exact_init":
            lt.lora_ga_init_(model, grads)
        return grads
    if method.startswith("sketch"):
        kind, _, sweeps = method.partition(":")
        svd = lt.estimate_gradient_svd(model, data, 2 * R, n_sweeps=int(sweeps or SWEEPS),
                                       block_size=BLOCK, loss_fn=_loss, rng=0, progress=False)
        if kind == "sketch_init":
            lt.lora_ga_init_(model, svd)
        return svd
    if method == "peft_init":
        import warnings

        import peft

        cfg = peft.LoraConfig(r=R, lora_alpha=2 * R, target_modules=TARGETS,
                              init_lora_weights="lora_ga", lora_ga_config=peft.LoraGAConfig())

        def train_step() -> None:
            for b in data:
                _loss(model, b).backward()

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peft.preprocess_loraga(model, cfg, train_step)
            return peft.get_peft_model(model, cfg)
    raise ValueError(method)


def _child(method: str, width: int, ffn: int) -> None:
    """Fresh-process peak memory of one method (prints JSON)."""  # numpydoc ignore=PR01
    import torch

    torch.set_num_threads(1)
    wrap = method not in ("peft_init", "plain")
    small = _model(256, 512)  # warm-up: first-call costs stay out of every method's peak
    _run(method, _peft(small) if wrap else small, _batches(256))
    del small
    model, data = _model(width, ffn), _batches(width)
    if wrap:
        model = _peft(model)
    base = _reset_peak()
    _run(method, model, data)
    print(json.dumps({"extra": _vm("VmHWM") - base}))


def _vm(key: str) -> int:
    """A ``/proc/self/status`` size in bytes."""  # numpydoc ignore=PR01,RT01
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith(key + ":"))
    return int(line.split()[1]) * 1024


def _reset_peak() -> int:
    """Reset the peak resident set to the current one (Linux >= 4.0); return it."""  # numpydoc ignore=RT01
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _vm("VmRSS")


MKL_CACHE = "--mkl-cache" in sys.argv


def _peak(method: str, width: int, ffn: int) -> float:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    if not MKL_CACHE:
        env["MKL_DISABLE_FAST_MM"] = "1"
    out = subprocess.run([sys.executable, __file__, "--child", method, str(width), str(ffn)],
                         capture_output=True, text=True, check=True, env=env, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])["extra"] / 2**20


def _accuracy(exact: dict[str, Any], svd: dict[str, Any]) -> tuple[float, float]:
    """Largest sine of the [r, 2r) left block, 1 - smallest first-step cosine over the layers."""  # numpydoc ignore=PR01,RT01
    import torch

    worst_sine, worst_cos = 0.0, 1.0
    for name, G in exact.items():
        U0, _, Vh0 = torch.linalg.svd(G.double(), full_matrices=False)
        res = svd[name]
        Q = torch.linalg.qr(res.U[:, R : 2 * R].double())[0]
        block = U0[:, R : 2 * R]
        worst_sine = max(worst_sine, float(torch.linalg.matrix_norm(Q - block @ (block.T @ Q), 2)))

        def step(U: Any, Vh: Any, G: Any = G) -> Any:
            A, B = Vh[:R].double(), U[:, R : 2 * R].double()
            return B @ (B.T @ G.double()) + (G.double() @ A.T) @ A

        a, b = step(U0, Vh0), step(res.U, res.Vh)
        worst_cos = min(worst_cos, float((a * b).sum() / (a.norm() * b.norm())))
    return worst_sine, 1 - worst_cos


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def report(width: int = 4096, ffn: int = 11008) -> list[list[Any]]:
    """One run of every method on the synthetic stack; prints and returns the table."""  # numpydoc ignore=PR01,RT01
    import torch

    torch.manual_seed(0)
    small = _batches(256)  # warm-up: first-call costs stay out of the timings
    _run("sketch", _peft(_model(256, 512)), small)
    _run("exact_init", _peft(_model(256, 512)), small)
    data = _batches(width)
    t_exact, exact = _timed(lambda: _run("exact", _peft(_model(width, ffn)), data))
    plain = _peak("plain", width, ffn)
    t, _ = _timed(lambda: _run("exact_init", _peft(_model(width, ffn)), data))
    rows = [["exact (estimate_gradients)", 1, t, t / t_exact, *_memory("exact", width, ffn, plain),
             0.0, 0.0]]
    for sweeps in (SWEEPS, 4):
        t, _ = _timed(lambda s=sweeps: _run(f"sketch_init:{s}", _peft(_model(width, ffn)), data))
        svd = _run(f"sketch:{sweeps}", _peft(_model(width, ffn)), data)
        rows.append([f"sketch ℓ={BLOCK}, K={BLOCK * sweeps}", sweeps, t, t / t_exact,
                     *_memory(f"sketch:{sweeps}", width, ffn, plain), *_accuracy(exact, svd)])
    try:
        import peft  # noqa: F401
    except ImportError:
        pass
    else:
        t, _ = _timed(lambda: _run("peft_init", _model(width, ffn), data))
        rows.append(["PEFT LoRA-GA", 1, t, t / t_exact, *_memory("peft_init", width, ffn, plain),
                     math.nan, math.nan])
    header = ["method", "sweeps", "est+init s", "x exact pass", "peak MiB", "net MiB",
              "sin [r,2r)", "1 - min cos step"]
    print(f"stack {width}x{width}, {ffn}x{width}, {width}x{ffn}; LoRA rank {R}; "
          f"4 batches x 64 tokens; one exact estimation pass: {t_exact:.3g} s")
    print("  " + " | ".join(header))
    for row in rows:
        print("  " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in row))
    return rows


def _memory(method: str, width: int, ffn: int, plain: float) -> list[float]:
    """[peak MiB, peak MiB net of a plain frozen forward+backward]."""  # numpydoc ignore=PR01,RT01
    peak = _peak(method, width, ffn)
    return [peak, peak - plain]


class GradSketch:
    """asv: sketch vs exact estimation on a small stack (512 wide, 1376 FFN)."""

    timeout = 600

    def setup(self) -> None:
        self.data = _batches(512)

    def time_estimate_gradient_svd(self) -> None:
        _run("sketch", _peft(_model(512, 1376)), self.data)

    def time_estimate_gradients(self) -> None:
        _run("exact", _peft(_model(512, 1376)), self.data)

    def peakmem_estimate_gradient_svd(self) -> None:
        _run("sketch", _peft(_model(512, 1376)), self.data)

    def track_first_step_cosine_deficit(self) -> float:
        exact = _run("exact", _peft(_model(512, 1376)), self.data)
        svd = _run("sketch", _peft(_model(512, 1376)), self.data)
        return _accuracy(exact, svd)[1]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif "--quick" in sys.argv:
        report(1024, 2752)
    else:
        report()
