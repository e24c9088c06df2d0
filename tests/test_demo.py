"""``lowrank demo --quick`` runs every section end to end (a smoke test of the main job)."""

from __future__ import annotations

import subprocess
import sys

from lowrank._demo import SECTIONS


def test_demo_quick_runs_all_sections(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "lowrank", "demo", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for name in SECTIONS:
        assert f"== {name}:" in out.stdout
    assert "section not available" not in out.stdout
