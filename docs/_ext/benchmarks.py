"""One documentation page per results file in benchmarks/results/: each page includes the
markdown the benchmark wrote (and its plot, when there is one), so the site shows exactly the
committed figures. The pages are generated into docs/benchmarks/results/ (not in git)."""

from __future__ import annotations

from pathlib import Path


def _page(name: str, md: Path, png: Path | None, depth: str) -> str:
    text = f"```{{include}} {depth}/benchmarks/results/{md.name}\n```\n"
    if png is not None:
        text += f"\n```{{image}} {depth}/benchmarks/results/{png.name}\n:alt: {name}\n:width: 100%\n```\n"
    return text


def write_benchmark_pages(bench: Path, out: Path) -> list[str]:
    """Write ``out/results/<name>.md`` for every ``bench/results/<name>.md``; pages of results that
    are gone are removed; a page is rewritten only when its text changes (Sphinx rebuilds by mtime)."""
    target = out / "results"
    target.mkdir(parents=True, exist_ok=True)
    names = []
    for md in sorted((bench / "results").glob("*.md")):
        png = md.with_suffix(".png")
        text = _page(md.stem, md, png if png.is_file() else None, "../../..")
        page = target / md.name
        if not page.is_file() or page.read_text() != text:
            page.write_text(text)
        names.append(md.stem)
    for stale in target.glob("*.md"):
        if stale.stem not in names:
            stale.unlink()
    return names
