#!/usr/bin/env python
"""Build the documentation site (MkDocs, offline) from the Markdown that lives beside the code.

Nothing is written twice: the site is assembled from the files the repository already keeps current, into a staging
folder, and built there:

* ``index.md``: the repository's README.md (install, the two commands, the network API, the layout);
* every ``docs/*.md`` (networks and the Bi-WKV operator with how it differs from the authors' CUDA kernel, the 3D
  extension, DICOM and input robustness, batch runs, bundles by name and model-zoo checks, MONAI Label);
* ``bundles/<name>.md``: each bundle's ``docs/README.md`` (model, data, results table, figure, commands), with
  the figures it shows copied beside it, and ``bundles/<name>/<page>.md`` for every other Markdown file of its
  ``docs/`` (full test results, training ablations), listed under the bundle in the navigation;
* ``cli.md``: the ``--help`` of the ``monai-rwkv`` command and of each of its subcommands, generated at build time;
* ``benchmarks.md`` and ``benchmark-notes.md``: ``benchmarks/RESULTS.md`` and ``benchmarks/NOTES.md``.

Links between these files are rewritten to their place in the site; a relative link to anything else in the
repository becomes the repository path in code type (the site is read offline, without the repository). The theme
is MkDocs' ``readthedocs`` with highlight.js switched off (it would load from a CDN), ``use_directory_urls: false``
so the pages open from the file system, and ``--strict`` so a broken link fails the build.

Usage::

    python scripts/build_docs.py [--out build/docs]    # the site: build/docs/site/index.html
    python scripts/build_docs.py --screenshots build/docs/screenshots   # and how chromium shows it
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")

#: wider pages, and table cells that wrap (the theme keeps them on one line: wide result tables were cut off).
EXTRA_CSS = ".wy-nav-content { max-width: 1200px; }\n.wy-table-responsive table td { white-space: normal; }\n"

#: the pages of docs/ in the navigation order, with their titles.
DOC_PAGES = {
    "networks.md": "Networks and Bi-WKV",
    "robustness.md": "Inputs, DICOM and safety",
    "batch.md": "Batch restoration",
    "bundles.md": "Bundles by name, model-zoo checks",
    "monailabel.md": "MONAI Label",
}


def bundle_pages() -> dict[Path, str]:
    """``{bundle folder: short name}`` of every bundle with a docs/README.md, in name order."""
    out = {}
    for readme in sorted((REPO / "bundles").glob("*/docs/README.md")):
        folder = readme.parents[1]
        out[folder] = folder.name.removeprefix("restore_rwkv_")
        meta = folder / "configs" / "metadata.json"
        if not meta.is_file():
            raise SystemExit(f"{meta}: missing")
    return out


def bundle_subpages(folder: Path) -> list[Path]:
    """The Markdown files of a bundle's ``docs/`` other than its README.md, in name order."""
    return sorted(p for p in (folder / "docs").glob("*.md") if p.name != "README.md")


def page_title(source: Path) -> str:
    """The first level-1 heading of a Markdown file, else its name."""
    match = re.search(r"^# (.+)$", source.read_text(encoding="utf-8"), flags=re.M)
    return match.group(1).strip() if match else source.stem


def site_map(bundles: dict[Path, str]) -> dict[Path, str]:
    """Repository file -> its page in the site."""
    pages = {REPO / "README.md": "index.md", REPO / "benchmarks" / "RESULTS.md": "benchmarks.md"}
    pages[REPO / "benchmarks" / "NOTES.md"] = "benchmark-notes.md"
    pages.update({REPO / "docs" / name: name for name in DOC_PAGES})
    for folder, short in bundles.items():
        pages[folder / "docs" / "README.md"] = f"bundles/{short}.md"
        pages.update({sub: f"bundles/{short}/{sub.name}" for sub in bundle_subpages(folder)})
    return pages


def rewrite_links(text: str, source: Path, page: str, pages: dict[Path, str], assets: dict[Path, str]) -> str:
    """Links of ``source`` (a repository file shown as ``page``) rewritten for the site (see the module docstring)."""
    depth = page.count("/")

    def replace(match: re.Match) -> str:
        bang, label, target = match.groups()
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve()
        site = pages.get(resolved) or assets.get(resolved)
        if site is None and bang:
            site = f"{Path(page).with_suffix('')}/{resolved.name}"
            assets[resolved] = site
        if site is None:
            return f"{label} (`{os.path.relpath(resolved, REPO)}`)" if label else f"`{os.path.relpath(resolved, REPO)}`"
        href = "../" * depth + site + (f"#{anchor}" if anchor else "")
        return f"{bang}[{label}]({href})"

    return LINK.sub(replace, text)


def cli_page() -> str:
    """``cli.md``: the command's help and each subcommand's, as the installed package prints them."""
    command = [sys.executable, "-m", "monai_rwkv.apps.cli"]
    top = subprocess.run([*command, "--help"], capture_output=True, text=True, check=True).stdout
    names = re.findall(r"^\s{4}(\w+)\s", top, flags=re.M)
    subcommands = re.search(r"\{([a-z,_-]+)\}", top)
    if subcommands:
        names = subcommands.group(1).split(",")
    parts = [
        "# The `monai-rwkv` command\n",
        "Generated from the installed package's `--help` when the site was built.\n",
        "```text\n" + top.rstrip() + "\n```\n",
    ]
    for name in names:
        text = subprocess.run([*command, name, "--help"], capture_output=True, text=True, check=True).stdout
        parts.append(f"## `monai-rwkv {name}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


def stage(src: Path) -> dict:
    """Write the pages and assets to ``src``; return the MkDocs navigation."""
    if src.exists():
        shutil.rmtree(src)
    bundles = bundle_pages()
    pages = site_map(bundles)
    assets: dict[Path, str] = {}
    for source, page in pages.items():
        if not source.is_file():
            raise SystemExit(f"{source}: missing")
        text = rewrite_links(source.read_text(encoding="utf-8"), source, page, pages, assets)
        (src / page).parent.mkdir(parents=True, exist_ok=True)
        (src / page).write_text(text, encoding="utf-8")
    for source, site in assets.items():
        if not source.is_file():
            raise SystemExit(f"{source}: an image a page shows is missing")
        (src / site).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, src / site)
    (src / "cli.md").write_text(cli_page(), encoding="utf-8")
    (src / "extra.css").write_text(EXTRA_CSS, encoding="utf-8")
    titles = {}
    for folder in bundles:
        titles[folder] = json.loads((folder / "configs" / "metadata.json").read_text())["name"]
    return [
        {"Home": "index.md"},
        {"Command line": "cli.md"},
        {"Bundles": [bundle_nav(titles[f], f, s) for f, s in bundles.items()]},
        *({title: name} for name, title in DOC_PAGES.items()),
        {"Benchmarks": [{"Results": "benchmarks.md"}, {"Notes": "benchmark-notes.md"}]},
    ]


def bundle_nav(title: str, folder: Path, short: str) -> dict:
    """A bundle's navigation entry: its README page, and a section with its other pages when it has any."""
    subpages = bundle_subpages(folder)
    if not subpages:
        return {title: f"bundles/{short}.md"}
    children = [{page_title(sub): f"bundles/{short}/{sub.name}"} for sub in subpages]
    return {title: [{"Overview": f"bundles/{short}.md"}, *children]}


def build(out: Path, strict: bool = True) -> Path:
    """Stage and build the site under ``out`` (``out/src``, ``out/site``); returns the site's index.html."""
    out = out.resolve()
    nav = stage(out / "src")
    config = {
        "site_name": "monai-rwkv",
        "docs_dir": os.fspath(out / "src"),
        "site_dir": os.fspath(out / "site"),
        "use_directory_urls": False,
        "theme": {"name": "readthedocs", "highlightjs": False},
        "extra_css": ["extra.css"],
        "nav": nav,
    }
    config_file = out / "mkdocs.yml"
    config_file.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    command = [sys.executable, "-m", "mkdocs", "build", "--clean", "-f", os.fspath(config_file)]
    result = subprocess.run([*command, *(["--strict"] if strict else [])], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"mkdocs build failed:\n{result.stdout}{result.stderr}")
    return out / "site" / "index.html"


def screenshots(site: Path, folder: Path, browser: str = "chromium") -> list[Path]:
    """PNG screenshots of the landing page and of every bundle page, by a real headless browser (Debian's
    ``chromium``): what a reader sees, to look at after a change of the docs or the theme."""
    if shutil.which(browser) is None:
        raise SystemExit(f"--screenshots needs {browser} (Debian: apt-get install chromium)")
    folder.mkdir(parents=True, exist_ok=True)
    shots = []
    for page in [site / "index.html", *sorted((site / "bundles").glob("*.html"))]:
        png = folder / f"{page.stem}.png"
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
        command += ["--window-size=1400,2400", f"--screenshot={png}", page.as_uri()]
        subprocess.run(command, capture_output=True, timeout=120, check=True)
        shots.append(png)
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "docs")
    parser.add_argument("--screenshots", type=Path, default=None, help="also save browser screenshots here")
    args = parser.parse_args(argv)
    index = build(args.out)
    print(f"built {index}")
    if args.screenshots is not None:
        for png in screenshots(index.parent, args.screenshots):
            print(f"screenshot {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
