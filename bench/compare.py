"""Side-by-side comparison with the peers, one process, one run: ``python bench/compare.py TOPIC``.

Topics: svd, cr, volume, lora_ga, lora_pro (each in bench/peers/compare_<topic>.py with a
``main(argv) -> int``; kept out of asv's discovery, which only walks packages). Prints
versions, BLAS (threadpoolctl), medians of repeats and
ratios. Run it on an otherwise idle machine; compare ratios, not absolute times.
"""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path

TOPICS = ["svd", "cr", "volume", "lora_ga", "lora_pro"]


def environment() -> str:
    import numpy as np

    head = f"python {platform.python_version()} on {platform.machine()} ({_cpu_model()})"
    lines = [f"{head}, numpy {np.__version__}"]
    for name in ("scipy", "sklearn", "torch", "numba"):
        try:
            lines.append(f"{name} {importlib.import_module(name).__version__}")
        except ImportError:
            lines.append(f"{name} missing")
    try:
        from threadpoolctl import threadpool_info

        for info in threadpool_info():
            lines.append(
                f"{info.get('internal_api')} {info.get('version')} "
                f"({info.get('num_threads')} threads, {info.get('architecture')})"
            )
    except ImportError:
        lines.append("threadpoolctl missing: BLAS unknown")
    return "; ".join(lines)


def _cpu_model() -> str:
    """CPU model name: BLAS speed (MKL on AMD, say) depends on it, so runs record it."""
    try:
        with Path("/proc/cpuinfo").open() as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU unknown"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in TOPICS:
        print(__doc__)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
    print(environment())
    module = importlib.import_module(f"compare_{argv[0]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
