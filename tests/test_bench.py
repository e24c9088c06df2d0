"""The asv benchmark suite is well-formed (``asv check``) and the compare driver runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_asv_check_passes():
    asv = shutil.which("asv") or str(Path(sys.executable).with_name("asv"))
    if not Path(asv).exists():
        pytest.skip("asv is not installed")
    out = subprocess.run(
        [asv, "check", "--python=same"], cwd=BENCH, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "No problems found" in out.stdout


def test_compare_driver_lists_topics():
    out = subprocess.run(
        [sys.executable, str(BENCH / "compare.py")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    for topic in ("svd", "cr", "volume", "lora_ga", "lora_pro"):
        assert topic in out.stdout
