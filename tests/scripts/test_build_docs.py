"""scripts/build_docs.py: the documentation site builds offline in MkDocs' strict mode (no broken links), with a page
and figure for every bundle, the generated command-line reference and the pages of docs/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("mkdocs", reason="the docs site needs mkdocs (the dev extra)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = load_script("build_docs").build(tmp_path_factory.mktemp("docs"))
    assert index.is_file()
    return index.parent


def test_every_bundle_has_a_page_with_its_results_and_figures(site: Path) -> None:
    bundles = sorted(p.parents[1].name for p in (ROOT / "bundles").glob("*/docs/README.md"))
    assert bundles
    for folder in bundles:
        page = site / "bundles" / f"{folder.removeprefix('restore_rwkv_')}.html"
        html = page.read_text()
        assert "<table>" in html, f"{page.name}: no results table"
        for image in re.findall(r'<img[^>]+src="([^"]+)"', html):
            assert (page.parent / image).is_file(), f"{page.name}: image {image} missing"


def test_every_page_of_a_bundles_docs_is_a_page_linked_both_ways(site: Path) -> None:
    subpages = sorted(p for p in (ROOT / "bundles").glob("*/docs/*.md") if p.name != "README.md")
    assert subpages
    for source in subpages:
        short = source.parents[1].name.removeprefix("restore_rwkv_")
        page = site / "bundles" / short / f"{source.stem}.html"
        assert page.is_file(), f"{source}: no page"
        for image in re.findall(r'<img[^>]+src="([^"]+)"', page.read_text()):
            assert (page.parent / image).is_file(), f"{page}: image {image} missing"
    ct = site / "bundles" / "ct_denoise.html"
    assert 'href="ct_denoise/ablations.html"' in ct.read_text()
    ablations = (site / "bundles" / "ct_denoise" / "ablations.html").read_text()
    assert 'href="../ct_denoise.html#what-the-defaults-rest-on"' in ablations


def test_the_landing_page_and_the_references(site: Path) -> None:
    index = (site / "index.html").read_text()
    assert "make demo" in index and "make test" in index
    cli = (site / "cli.html").read_text()
    for command in ("monai-rwkv restore", "monai-rwkv batch", "monai-rwkv bundles"):
        assert command in cli
    for page in ("networks", "robustness", "batch", "bundles", "monailabel", "benchmarks", "benchmark-notes"):
        assert (site / f"{page}.html").is_file(), page
    # offline: nothing is loaded from another host
    for page in site.rglob("*.html"):
        assert not re.search(r'<(script|link)[^>]+(src|href)="https?://', page.read_text()), page.name
