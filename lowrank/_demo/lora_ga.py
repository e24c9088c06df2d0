"""``lowrank demo --sections lora_ga``: LoRA-GA init vs PEFT's, and a tiny training run."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import DemoContext, timeit


def _gradient_stack(
    m: int, n: int, layers: int, seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """float32 matrices with singular values 1/i and their exact left singular vectors."""  # numpydoc ignore=PR01,RT01
    rng = np.random.default_rng(seed)
    k = min(m, n)
    U = np.linalg.qr(rng.standard_normal((m, k)))[0]
    V = np.linalg.qr(rng.standard_normal((n, k)))[0]
    base = (U / np.arange(1, k + 1)) @ V.T
    perms = [rng.permutation(m) for _ in range(layers)]
    return np.stack([base[p] for p in perms]).astype(np.float32), [U[p] for p in perms]


def _sine(B: Any, U_block: np.ndarray) -> float:
    """Largest principal-angle sine between span(B) and span(U_block)."""  # numpydoc ignore=PR01,RT01
    Q = np.linalg.qr(np.asarray(B, dtype=np.float64))[0]
    return float(np.linalg.norm(Q - U_block @ (U_block.T @ Q), 2))


def _init_table(ctx: DemoContext) -> None:
    """Time and [r, 2r) accuracy: lowrank (batched) vs PEFT's svd_lowrank(q=4r, niter=4)."""  # numpydoc ignore=PR01
    import lowrank

    m, n, layers, r = (512, 1024, 2, 8) if ctx.quick else (2048, 2048, 4, 8)
    reps = 1 if ctx.quick else 3
    stack, Us = _gradient_stack(m, n, layers)
    rows = []
    t, B = timeit(lambda: lowrank.lora_ga_init(stack, r, scaling=2.0, rng=0).B, reps)
    rows.append(
        ["lowrank (numpy)", t * 1e3, max(_sine(B[i], Us[i][:, r : 2 * r]) for i in range(layers))]
    )
    try:
        import torch
    except ImportError:
        print("  (torch not installed: PEFT's svd_lowrank baseline skipped)")
        torch = None
    if torch is not None:
        ts = torch.from_numpy(stack)
        t, B = timeit(lambda: lowrank.lora_ga_init(ts, r, scaling=2.0, rng=0).B, reps)
        rows.append(
            [
                "lowrank (torch)",
                t * 1e3,
                max(_sine(B[i].numpy(), Us[i][:, r : 2 * r]) for i in range(layers)),
            ]
        )
        torch.manual_seed(0)
        t, Bs = timeit(
            lambda: [torch.svd_lowrank(g, q=4 * r, niter=4)[0][:, r : 2 * r] for g in ts], reps
        )
        rows.append(
            [
                "PEFT/official svd_lowrank",
                t * 1e3,
                max(_sine(Bs[i].numpy(), Us[i][:, r : 2 * r]) for i in range(layers)),
            ]
        )
    print(f"  init stage, stack of {layers} gradients {m}x{n} (σ_i = 1/i), r = {r}:")
    ctx.table(["method", "ms", "sine [r:2r]"], rows)


def _loss_curves(quick: bool) -> dict[str, list[float]] | None:
    """Full fine-tuning, vanilla LoRA and LoRA-GA (two scalings) on a teacher-student MLP."""  # numpydoc ignore=PR01,RT01
    try:
        import torch
        from peft import LoraConfig, get_peft_model
    except ImportError:
        return None
    import copy

    import lowrank.torch as lt

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 16))
    teacher = copy.deepcopy(base)
    with torch.no_grad():
        for lin in (teacher[0], teacher[2]):
            o, i = lin.weight.shape
            lin.weight += (
                0.5 * torch.randn(o, 2, generator=g) @ torch.randn(2, i, generator=g) / i**0.5
            )
    X = torch.randn(256, 32, generator=g)
    Y = teacher(X).detach()

    def mse(model: Any, batch: Any) -> Any:
        return torch.nn.functional.mse_loss(model(batch[0]), batch[1])

    def train(model: Any) -> list[float]:
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.2)
        out = []
        for _ in range(30 if quick else 200):
            loss = mse(model, (X, Y))
            out.append(loss.item())
            opt.zero_grad()
            loss.backward()
            opt.step()
        return out

    def lora() -> Any:
        torch.manual_seed(1)
        return get_peft_model(
            copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["0", "2"])
        )

    def lora_ga(**options: Any) -> Any:
        model = lora()
        grads = lt.estimate_gradients(model, [(X, Y)], loss_fn=mse, progress=False)
        lt.lora_ga_init_(model, grads, **options)
        return model

    # the default (compat="peft", PEFT's scaling) and the paper's scaling, whose offsets
    # are much larger; both at the same learning rate as vanilla LoRA
    return {
        "full fine-tuning": train(copy.deepcopy(base)),
        "LoRA (r=4)": train(lora()),
        "LoRA-GA (r=4, default)": train(lora_ga()),
        'LoRA-GA (r=4, compat="paper")': train(lora_ga(compat="paper")),
    }


def run(ctx: DemoContext) -> None:
    """Run the LoRA-GA demo section."""  # numpydoc ignore=PR01
    _init_table(ctx)
    curves = _loss_curves(ctx.quick)
    if curves is None:
        print("  (torch/peft not installed: training comparison skipped)")
        return
    steps = len(next(iter(curves.values())))
    marks = [1, steps // 4, steps // 2, steps - 1]
    print("  training loss (SGD, lr 0.2) at steps", marks)
    ctx.table(
        ["method", *[f"step {s}" for s in marks]],
        [[k, *[v[s] for s in marks]] for k, v in curves.items()],
    )
    plt = ctx.pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for name, losses in curves.items():
            ax.semilogy(losses, label=name)
        ax.set_xlabel("SGD step")
        ax.set_ylabel("training loss")
        ax.legend()
        ctx.save(fig, "lora_ga_loss.png")
        plt.close(fig)
