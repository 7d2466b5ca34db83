"""``stem predict-slide --slides LIST``: many slides, resumable, split over ``torchrun`` processes.

LIST is a text file, one slide per line: ``path`` or ``path<TAB>mpp`` (relative paths are read
from LIST's folder; ``#`` starts a comment). Each slide's output is ``OUT/<slide stem>.h5ad``; a
slide whose output exists is skipped, so an interrupted cohort resumes where it stopped. Under
``torchrun --nproc_per_node K`` (Gloo on CPU, NCCL on GPU), process r predicts the r-th, (r+K)-th…
of the slides still to do, and rank 0 writes ``OUT/slides.tsv`` once all are done.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ..atomic import atomic_path
from ..errors import StemError, require
from ..stem import StemModel
from ..training.distributed import init_distributed
from .slide import SlideConfig, predict_slide

log = logging.getLogger(__name__)
INDEX = "slides.tsv"


def read_slide_list(path: str | Path) -> list[tuple[Path, float | None]]:
    """``(slide, mpp or None)`` per line of a slide list, checked: files exist, stems unique."""
    path = Path(path)
    require(path.is_file(), f"slide list not found: {path}")
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split("\t")
        require(len(parts) <= 2, f"{path.name} line {n}: expected 'path' or 'path<TAB>mpp', got {line!r}")
        slide = Path(parts[0].strip())
        slide = slide if slide.is_absolute() else path.parent / slide
        require(slide.is_file(), f"{path.name} line {n}: slide not found: {slide}")
        try:
            mpp = float(parts[1]) if len(parts) == 2 and parts[1].strip() else None
        except ValueError:
            raise StemError(f"{path.name} line {n}: mpp {parts[1]!r} is not a number") from None
        require(mpp is None or 0 < mpp <= 50, f"{path.name} line {n}: µm per pixel must be in (0, 50]")
        entries.append((slide, mpp))
    require(entries, f"{path.name} lists no slide")
    stems = pd.Series([s.stem for s, _ in entries])
    dup = stems[stems.duplicated()].tolist()
    if dup:
        raise StemError(f"{path.name}: two slides would write one output (same file stem: {dup[0]}); rename one")
    return entries


def predict_slides(base: SlideConfig, slide_list: str | Path) -> dict:
    """Predict every slide of ``slide_list`` into the folder ``base.out``; returns a summary."""
    entries = read_slide_list(slide_list)
    out_dir = Path(base.out)
    require(not out_dir.is_file(), f"with --slides, --out is a folder; {out_dir} is a file")
    info = init_distributed(base.predict.device)
    if info.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    _barrier(info)
    todo = [(s, m) for s, m in entries if base.overwrite or not (out_dir / f"{s.stem}.h5ad").exists()]
    _barrier(info)  # every process has listed what is left before any writes
    mine = todo[info.rank::info.world]
    log.info("process %d/%d: %d of %d slides (%d already done)", info.rank, info.world, len(mine),
             len(entries), len(entries) - len(todo))
    model = StemModel.from_run(base.run, base.checkpoint) if mine else None
    failed = []
    for slide, mpp in mine:
        cfg = replace(base, image=str(slide), out=str(out_dir / f"{slide.stem}.h5ad"), mpp=mpp or base.mpp)
        try:
            res = predict_slide(cfg, model)
            log.info("%s: %d spots in %.0f s", slide.name, res["spots"], res["total_seconds"])
        except StemError as exc:  # one bad slide must not stop the cohort
            log.error("%s: %s", slide.name, exc)
            failed.append(f"{slide.name} ({exc})")
    _barrier(info)
    rows = [{"slide": str(s), "output": str(out_dir / f"{s.stem}.h5ad"),
             "done": (out_dir / f"{s.stem}.h5ad").is_file()} for s, _ in entries]
    if info.main:
        with atomic_path(out_dir / INDEX, overwrite=True) as tmp:
            pd.DataFrame(rows).to_csv(tmp, sep="\t", index=False)
    require(not failed, f"{len(failed)} of {len(mine)} slides failed: {'; '.join(failed)}")
    return {"slides": len(entries), "done": sum(r["done"] for r in rows), "this_process": len(mine),
            "rank": info.rank, "world": info.world, "index": str(out_dir / INDEX)}


def _barrier(info) -> None:
    if info.world > 1:
        import torch.distributed as dist

        dist.barrier()
