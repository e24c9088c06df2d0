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


def _demo(*args: str) -> subprocess.CompletedProcess:
    """Run ``python -m lowrank demo ARGS`` and capture its output."""  # numpydoc ignore=PR01,RT01
    cmd = [sys.executable, "-m", "lowrank", "demo", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_demo_refuses_an_unwritable_out_folder_before_running(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = _demo("--quick", "--sections", "volume", "--out", str(blocker / "plots"))
    assert out.returncode == 2
    assert "--out" in out.stderr
    assert str(blocker / "plots") in out.stderr
    assert "Traceback" not in out.stderr
    assert "== volume:" not in out.stdout  # refused before any section ran
    assert blocker.read_text() == "not a folder"


def test_demo_refuses_an_out_path_that_is_a_file(tmp_path):
    target = tmp_path / "plots.png"
    target.write_text("x")
    out = _demo("--quick", "--sections", "volume", "--out", str(target))
    assert out.returncode == 2
    assert "not a folder" in out.stderr
    assert "Traceback" not in out.stderr


def test_demo_out_check_creates_nothing(tmp_path):
    from lowrank._cli import _check_out_folder

    _check_out_folder(tmp_path / "new" / "deeper")
    assert list(tmp_path.iterdir()) == []
