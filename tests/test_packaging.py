"""Packaging: one top-level name, kernels under lowrank.kernels, a light ``import lowrank``."""

from __future__ import annotations

import email.parser
import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import lowrank

ROOT = Path(__file__).resolve().parents[1]


# the distribution name; "lowrank" on PyPI is an unrelated project. The import name is lowrank.
DIST_NAME = "lowrank-approx"


def test_top_level_is_only_lowrank():
    dist = importlib.metadata.distribution(DIST_NAME)
    top = dist.read_text("top_level.txt")
    if top is not None:  # editable installs may not write it
        assert top.split() == ["lowrank"]
    import lowrank.kernels

    assert lowrank.kernels.__name__ == "lowrank.kernels"


def test_no_top_level_kernels_module_from_us():
    spec = importlib.util.find_spec("kernels")
    if spec is not None:  # somebody else's package (a PyPI project is called "kernels")
        assert "lowrank" not in str(spec.origin)


def _import_kernels_from_root(extra_path: list[str]) -> subprocess.CompletedProcess:
    """``import kernels`` in a process whose sys.path starts at the repository root."""  # numpydoc ignore=PR01,RT01
    code = (
        f"import sys; sys.path[:] = [{str(ROOT)!r}] + {extra_path!r}\n"
        "try:\n    import kernels\nexcept ModuleNotFoundError as exc:\n"
        "    print('missing', exc.name)\nelse:\n    print('found', kernels.__file__)"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_source_root_on_path_never_serves_our_kernels_as_top_level():
    """From the repository root, ``kernels`` is the PyPI package or missing, never our folder."""
    import importlib.machinery

    alone = _import_kernels_from_root([p for p in sys.path if "site-packages" not in p])
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.split() == ["missing", "kernels"]
    elsewhere = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    other = importlib.machinery.PathFinder.find_spec("kernels", elsewhere)
    beside = _import_kernels_from_root(elsewhere)
    assert beside.returncode == 0, beside.stderr
    if other is None:
        assert beside.stdout.split() == ["missing", "kernels"]
    else:  # the unrelated PyPI package is installed (transformers needs it): it is served
        assert beside.stdout.split() == ["found", str(Path(other.origin))]
    assert str(ROOT / "kernels") not in beside.stdout


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
    assert lowrank.__version__ == importlib.metadata.version(DIST_NAME)


def test_cli_demo_help():
    out = subprocess.run(
        [sys.executable, "-m", "lowrank", "demo", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "--sections" in out.stdout


def _copy_sources(dest: Path) -> Path:
    """The files a build reads (pyproject, README, the two package folders), without caches."""  # numpydoc ignore=PR01,RT01
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    for folder in ("lowrank", "kernels"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _build(backend_call: str, src: Path, out: Path) -> str:
    """Run one PEP 517 hook of setuptools in ``src`` (a subprocess, so nothing leaks into here)."""  # numpydoc ignore=PR01,RT01
    code = f"from setuptools import build_meta as b; print(b.{backend_call}({str(out)!r}))"
    res = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


def test_distribution_metadata_under_the_new_name(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _copy_sources(src)
    out = tmp_path / "meta"
    out.mkdir()
    info = out / _build("prepare_metadata_for_build_wheel", src, out)
    meta = email.parser.Parser().parsestr((info / "METADATA").read_text())
    assert meta["Name"] == DIST_NAME
    assert {"torch", "test", "docs", "demo", "gpu", "bench"} <= set(meta.get_all("Provides-Extra"))
    assert (info / "top_level.txt").read_text().split() == ["lowrank"]
    assert "lowrank = lowrank._cli:main" in (info / "entry_points.txt").read_text()


def test_wheel_holds_only_the_lowrank_package(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _copy_sources(src)
    out = tmp_path / "wheel"
    out.mkdir()
    wheel = out / _build("build_wheel", src, out)
    assert wheel.name.startswith("lowrank_approx-")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"lowrank", wheel.name.split("-py")[0] + ".dist-info"}
    assert {"lowrank/__init__.py", "lowrank/py.typed", "lowrank/kernels/__init__.py"} <= set(names)


# Citations of documents that are not part of the repository: the planning documents (written
# with a character class so this file does not match itself), decision labels (a capital D and
# one or two digits, optionally a sub-number; not a variable being assigned, indexed or called)
# and issue numbers.
_FOREIGN_CITATION = re.compile(
    r"\b(?:S[P]EC|A[N]CHORS|C[O]NVENTIONS)\b"
    r"|\b[Dd]ecisions?\s+D\d"
    r"|(?<![\w.])D[1-9]\d?(?:\.\d+)?\b(?!\s*(?:=|\[|\(|@|\*|/))"
    r"|\b[Ii]ssues?\s+#?\d"
    r"|_s[p]ec_\d+(?:_\d+)*\b"  # a section number in a test name
)


def _repository_text_files() -> list[Path]:
    """Tracked plus untracked-but-not-ignored files, as git sees them."""  # numpydoc ignore=RT01
    res = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=False,
    )
    if res.returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / n for n in res.stdout.decode().split("\0") if n and (ROOT / n).is_file()]


def test_no_citation_of_documents_outside_the_repository():
    hits = []
    for path in _repository_text_files():
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary (images)
        for lineno, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if _FOREIGN_CITATION.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()[:100]}")
    assert not hits, "cite the docs page, the paper or the formula instead:\n" + "\n".join(hits)


@pytest.mark.parametrize(
    ("text", "cites"),
    [
        ("see S" "PEC §3.5", True),
        ("(decision D" "5)", True),
        ("the D" "7 question", True),
        ("scale-aware (D" "3.4)", True),
        ("fixed in iss" "ue 4", True),
        ("A" "NCHORS.md §6.1", True),
        ("D2 = np.diag(d2)", False),
        ("x = D1[0] + D1 @ y", False),
        ("3D arrays, a 2D plot, HD5, DD7", False),
        ("specification, anchors, conventions, issues with #", False),
        ("ModuleSpec, find_spec, SPECIAL", False),
        ("def test_toy_example_s" "pec_8_9(xp):", True),
        ("spec = importlib.util.find_spec(name)", False),
    ],
)
def test_citation_pattern_is_precise(text, cites):
    assert bool(_FOREIGN_CITATION.search(text)) is cites


def test_asv_uninstalls_the_distribution_by_its_name():
    # asv's default uninstall command is ``pip uninstall -y {project}``
    conf = json.loads((ROOT / "bench" / "asv.conf.json").read_text())
    assert conf["project"] == DIST_NAME
