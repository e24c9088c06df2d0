"""The documentation sources hang together: theory pages link their API pages, plots exist.

These read the Markdown only (fast); the full Sphinx build with ``-W`` runs in ``dev.py test``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
THEORY = sorted((DOCS / "theory").glob("*.md"))
# MyST image and figure syntax: ![alt](path) and ```{figure} path
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)|^```\{(?:figure|image)\}\s+(\S+)", re.MULTILINE)


def _images(page: Path) -> list[Path]:
    """Image files referenced by one page, resolved against its folder."""  # numpydoc ignore=PR01,RT01
    text = page.read_text()
    return [(page.parent / (m.group(1) or m.group(2))).resolve() for m in _IMAGE.finditer(text)]


@pytest.mark.parametrize("page", THEORY, ids=[p.stem for p in THEORY])
def test_theory_page_links_an_existing_api_page(page):
    targets = re.findall(r"\{doc\}`(?:[^<`]*<)?\.\./api/([\w-]+)>?`", page.read_text())
    assert targets, f"{page.name} links no API page"
    for name in targets:
        assert (DOCS / "api" / f"{name}.md").exists(), name


@pytest.mark.parametrize("page", THEORY, ids=[p.stem for p in THEORY])
def test_theory_page_images_exist(page):
    for image in _images(page):
        assert image.is_file(), f"{page.name} shows a missing image {image}"


def test_every_plot_is_shown_on_some_page():
    shown = {img for page in DOCS.rglob("*.md") if "_build" not in page.parts for img in _images(page)}
    plots = {p.resolve() for p in (DOCS / "theory" / "img").glob("*.png")}
    assert plots, "no plots found"
    assert plots <= shown, sorted(p.name for p in plots - shown)
