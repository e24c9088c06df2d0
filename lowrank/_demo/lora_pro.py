"""``lowrank demo`` section: LoRA-Pro adjusted gradients (needs torch).

Two parts: (1) the per-layer adjustment against the official formulas (``pinv`` with a
1e-8 ridge, explicit out×out projector, complex ``eig`` Sylvester), timed and compared
in float32; (2) a small training run, a linear layer fitted to a low-rank target,
tracking full fine-tuning with plain LoRA, LoRA-GA and LoRA-GA + LoRA-Pro.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["official_adjust", "plot_curves", "run", "tracking_gap", "training_curves"]


def official_adjust(A: Any, B: Any, gA: Any, gB: Any, s: float) -> tuple[Any, Any]:
    """The official LoRA-Pro adjustment (Sylvester gauge)."""  # numpydoc ignore=PR01,RT01
    import torch

    eye = torch.eye(A.shape[0], dtype=A.dtype)
    SA_inv = torch.linalg.pinv(A @ A.T + 1e-8 * eye)
    SB_inv = torch.linalg.pinv(B.T @ B + 1e-8 * eye)
    R, U = torch.linalg.eig(B.T @ B)  # solve S_B X + X S_A = K with complex eig
    S, V = torch.linalg.eig(-(A @ A.T))
    F = torch.linalg.solve(U, (-(SB_inv @ gA @ A.T) / s**2 + 0j) @ V)
    X = (U @ (F / (R[:, None] - S[None, :])) @ torch.linalg.inv(V)).real
    projector = torch.eye(B.shape[0], dtype=B.dtype) - B @ SB_inv @ B.T  # out × out
    return SB_inv @ gA / s**2 + X @ A, projector @ gB @ SA_inv / s**2 - B @ X


def _task(n_in: int, out: int, rank_true: int, n: int, seed: int) -> tuple[Any, Any, Any]:
    """Regression towards W0 + D, D of decaying rank ``rank_true``."""  # numpydoc ignore=PR01,RT01
    import torch

    g = torch.Generator().manual_seed(seed)
    W0 = torch.randn(out, n_in, generator=g) / math.sqrt(n_in)
    U, _ = torch.linalg.qr(torch.randn(out, rank_true, generator=g))
    V, _ = torch.linalg.qr(torch.randn(n_in, rank_true, generator=g))
    D = (U * torch.logspace(0, -1, rank_true)) @ V.T
    X = torch.randn(n, n_in, generator=g)
    return W0, X, X @ (W0 + D).T


def _loss(W: Any, X: Any, Y: Any) -> Any:
    return ((X @ W.T - Y) ** 2).mean()


def _factors(W0: Any, X: Any, Y: Any, r: int, s: float, init: str, scale: str):
    """(A, B, W_res): Kaiming A and zero B, or LoRA-GA."""  # numpydoc ignore=PR01,RT01
    import torch

    import lowrank

    out, n_in = W0.shape
    if init == "lora":
        A = torch.empty(r, n_in)
        torch.nn.init.kaiming_uniform_(
            A, a=math.sqrt(5), generator=torch.Generator().manual_seed(1)
        )
        return A, torch.zeros(out, r), W0.clone()
    W = W0.clone().requires_grad_(True)
    _loss(W, X, Y).backward()
    A, B = lowrank.lora_ga_init(W.grad.double(), r, scaling=s, scale=scale, svd="exact")
    A, B = A.float(), B.float()
    return A, B, W0 - s * B @ A


def _curve(W0, X, Y, steps, lr, *, optimizer, r=4, s=2.0, init="lora", pro=False):
    """Training losses of one method (``pro``: False/True/"full")."""  # numpydoc ignore=PR01,RT01
    import torch

    from lowrank.torch import LoRAProAdamW, lora_pro_adjust_

    if init == "full":
        params, weight = [torch.nn.Parameter(W0.clone())], None
    else:
        A, B, W_res = _factors(W0, X, Y, r, s, init, "gd_scale" if optimizer == "sgd" else "stable")
        params = [torch.nn.Parameter(A), torch.nn.Parameter(B)]
        weight = W_res
    if optimizer == "adam" and pro:
        mode = "full" if pro == "full" else "efficient"
        opt = LoRAProAdamW(params, lr=lr, weight_decay=0.0, mode=mode, pairs=[(*params, s)])
    elif optimizer == "adam":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    else:
        opt = torch.optim.SGD(params, lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        W = params[0] if weight is None else weight + s * params[1] @ params[0]
        loss = _loss(W, X, Y)
        loss.backward()
        if optimizer == "sgd" and pro:
            lora_pro_adjust_([(*params, s)])
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def training_curves(steps: int = 60, *, seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """Loss curves: full FT, LoRA, LoRA-GA, LoRA-GA + LoRA-Pro."""  # numpydoc ignore=PR01,RT01
    W0, X, Y = _task(32, 24, 6, 256, seed)
    out: dict[str, dict[str, list[float]]] = {}
    for optimizer, lr in (("sgd", 0.3), ("adam", 3e-3)):
        kw = {"optimizer": optimizer}
        runs = {
            "full fine-tuning": _curve(W0, X, Y, steps, lr, init="full", **kw),
            "LoRA": _curve(W0, X, Y, steps, lr, **kw),
            "LoRA-GA": _curve(W0, X, Y, steps, lr, init="ga", **kw),
        }
        pro = _curve(W0, X, Y, steps, lr, init="ga", pro=True, **kw)
        if optimizer == "adam":
            runs["LoRA-GA + LoRA-Pro (efficient)"] = pro
            runs["LoRA-GA + LoRA-Pro (full)"] = _curve(
                W0, X, Y, steps, lr, init="ga", pro="full", **kw
            )
        else:
            runs["LoRA-GA + LoRA-Pro"] = pro
        out[optimizer] = runs
    return out


def tracking_gap(curve: list[float], reference: list[float]) -> float:
    """Mean |log loss − log loss_full| over the steps."""  # numpydoc ignore=PR01,RT01
    return sum(abs(math.log(a) - math.log(b)) for a, b in zip(curve, reference, strict=True)) / len(
        curve
    )


def _timing_rows(ctx: Any) -> list[list[Any]]:
    import torch

    import lowrank
    from lowrank._demo import timeit

    rows = []
    n = 1024 if ctx.quick else 4096
    for r in (16,) if ctx.quick else (16, 64):
        g = torch.Generator().manual_seed(r)
        A, B = torch.randn(r, n, generator=g) / n**0.5, torch.randn(n, r, generator=g) / r**0.5
        G = 1e-3 * torch.randn(n, n, generator=g)
        gA, gB = 2.0 * B.T @ G, 2.0 * G @ A.T
        args = (A, B, gA, gB)
        t_ours, ours = timeit(lambda a=args: lowrank.lora_pro_adjust(*a, scaling=2.0))
        t_ref, ref = timeit(lambda a=args: official_adjust(*a, 2.0))
        diff = max(float((o - f).norm() / f.norm()) for o, f in zip(ours, ref, strict=True))
        rows.append([f"{n}x{n}", r, 1e3 * t_ours, 1e3 * t_ref, f"{t_ref / t_ours:.1f}x", diff])
    return rows


def run(ctx: Any) -> None:
    """Demo entry point."""  # numpydoc ignore=PR01
    try:
        import torch
    except ImportError:
        print("  (needs torch: pip install 'lowrank[torch]')")
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problems: avoid thread oversubscription on shared CPUs
    try:
        _run(ctx)
    finally:
        torch.set_num_threads(threads)


def _run(ctx: Any) -> None:
    print("  per-layer adjustment, float32 CPU: lowrank vs the official formulas")
    ctx.table(
        ["layer", "r", "lowrank ms", "official ms", "speed-up", "rel. diff"], _timing_rows(ctx)
    )
    curves = training_curves(30 if ctx.quick else 60)
    print(
        "\n  training a 24x32 linear layer, r = 4: mean |log loss - log loss_full| (lower = closer)"
    )
    rows = []
    for optimizer, runs in curves.items():
        full = runs["full fine-tuning"]
        for name, curve in runs.items():
            if name != "full fine-tuning":
                rows.append([optimizer, name, tracking_gap(curve, full), curve[-1], full[-1]])
    ctx.table(["optimizer", "method", "gap to full FT", "final loss", "full FT loss"], rows)
    plt = ctx.pyplot()
    if plt is not None:
        fig = plot_curves(plt, curves)
        ctx.save(fig, "lora_pro_training.png")
        plt.close(fig)


def plot_curves(plt: Any, curves: dict[str, dict[str, list[float]]]) -> Any:
    """Two panels (SGD, AdamW) of loss curves; returns the figure."""  # numpydoc ignore=PR01,RT01
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (optimizer, runs) in zip(axes, curves.items(), strict=True):
        for name, curve in runs.items():
            style = "k-" if name == "full fine-tuning" else "-"
            ax.semilogy(curve, style, label=name, lw=2 if "Pro" in name or "full" in name else 1)
        ax.set_title("SGD" if optimizer == "sgd" else "AdamW")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
