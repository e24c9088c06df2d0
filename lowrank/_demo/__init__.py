"""``lowrank demo``: each capability on built-in data, side by side with installed peers.

Each section is a module ``lowrank._demo.<name>`` with ``run(ctx: DemoContext) -> None``.
"""

from __future__ import annotations

import importlib
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SECTIONS", "DemoContext", "run_demo"]

SECTIONS: dict[str, str] = {
    "svd": "SVD-optimal and randomized low-rank approximation",
    "cr": "CR (column-row) sampled matrix products",
    "volume": "Gram volumes of non-square matrices",
    "lora_ga": "LoRA-GA initialisation from gradient SVDs",
    "grad_sketch": "LoRA-GA's gradient SVD from streamed products, no gradients",
    "lora_pro": "LoRA-Pro adjusted gradients",
}


@dataclass
class DemoContext:
    """What a demo section gets: output folder, quick flag, and shared helpers."""  # numpydoc ignore=PR01

    out: Path
    quick: bool = False
    plots: list[Path] = field(default_factory=list)

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        """Print a plain-text table."""  # numpydoc ignore=PR01
        cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
        for k, r in enumerate(cells):
            print("  " + "  ".join(c.rjust(w) if k else c.ljust(w) for c, w in zip(r, widths, strict=True)))
            if k == 0:
                print("  " + "  ".join("-" * w for w in widths))

    def pyplot(self) -> Any:
        """matplotlib.pyplot with a non-interactive backend, or None if not installed."""  # numpydoc ignore=RT01
        try:
            import matplotlib as mpl

            mpl.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        self.out.mkdir(parents=True, exist_ok=True)
        return plt

    def save(self, fig: Any, name: str) -> None:
        """Save a matplotlib figure into the output folder and remember it."""  # numpydoc ignore=PR01
        path = self.out / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        self.plots.append(path)


def _fmt(c: Any) -> str:
    if isinstance(c, float):
        return f"{c:.3g}" if abs(c) >= 1e-3 or c == 0 else f"{c:.2e}"
    return str(c)


def timeit(fn: Any, repeat: int = 3) -> tuple[float, Any]:
    """Median wall time of ``fn()`` over ``repeat`` runs after one warm-up, and its result."""  # numpydoc ignore=PR01,RT01
    out = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], out


def run_demo(sections: list[str], *, out: Path, quick: bool = False) -> int:
    """Run the chosen demo sections; return an exit status."""  # numpydoc ignore=PR01,RT01
    import numpy as np

    print(f"lowrank demo  (python {platform.python_version()}, numpy {np.__version__},"
          f" {platform.machine()})")
    ctx = DemoContext(out=out, quick=quick)
    for name in sections:
        print(f"\n== {name}: {SECTIONS[name]} ==")
        try:
            module = importlib.import_module(f"lowrank._demo.{name}")
        except ModuleNotFoundError:
            print("  (section not available in this build)")
            continue
        module.run(ctx)
    if ctx.plots:
        print("\nplots written:")
        for p in ctx.plots:
            print(f"  {p}")
    return 0
