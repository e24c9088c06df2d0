"""Packaging: one top-level name, kernels under lowrank.kernels, a light ``import lowrank``."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys

import lowrank


def test_top_level_is_only_lowrank():
    dist = importlib.metadata.distribution("lowrank")
    top = dist.read_text("top_level.txt")
    if top is not None:  # editable installs may not write it
        assert top.split() == ["lowrank"]
    import lowrank.kernels

    assert lowrank.kernels.__name__ == "lowrank.kernels"


def test_no_top_level_kernels_module_from_us():
    spec = importlib.util.find_spec("kernels")
    if spec is not None:  # somebody else's package (a PyPI project is called "kernels")
        assert "lowrank" not in str(spec.origin)


def test_import_is_light():
    code = (
        "import sys, lowrank; "
        "heavy = [m for m in ('torch', 'cupy', 'cupyx', 'numba', 'scipy.sparse.linalg') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_version():
    assert lowrank.__version__ == importlib.metadata.version("lowrank")


def test_cli_demo_help():
    out = subprocess.run(
        [sys.executable, "-m", "lowrank", "demo", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "--sections" in out.stdout
