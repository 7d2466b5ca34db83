"""Whole-slide images read region by region, never whole: the vendor formats (MRXS, VMS/VMU,
SCN, Philips TIFF, …) through OpenSlide, plain/Aperio/NDPI TIFFs through tiffslide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import StemError
from .image_source import ImageSource, rgb

TIFF_SUFFIXES = {".tif", ".tiff", ".svs", ".ndpi", ".qptiff"}  # tiffslide reads these (OpenSlide may too)
OPENSLIDE_SUFFIXES = {".mrxs", ".vms", ".vmu", ".svslide", ".dcm", ".czi", ".scn", ".bif"}
SLIDE_SUFFIXES = TIFF_SUFFIXES | OPENSLIDE_SUFFIXES
# TIFF vendors tiffslide reads as well as OpenSlide does; other vendors (Philips, Leica, Ventana,
# Trestle) go to OpenSlide, which knows their tile layouts and metadata
TIFFSLIDE_VENDORS = {None, "generic-tiff", "aperio", "hamamatsu"}


def _check_levels(path: Path) -> None:
    """Refuse a TIFF whose pyramid levels point past the end of the file (a truncated copy)."""
    import tifffile

    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tf:
            for series in tf.series[:1]:
                for i, level in enumerate(series.levels):
                    for page in level.pages:
                        ends = np.asarray(page.dataoffsets, np.int64) + np.asarray(page.databytecounts, np.int64)
                        if len(ends) and (ends.max() > size or (np.asarray(page.databytecounts) == 0).any()):
                            raise StemError(f"{path.name}: pyramid level {i} is incomplete (its tiles lie past "
                                            f"the end of the {size}-byte file: a truncated copy?)")
    except StemError:
        raise
    except Exception as exc:
        raise StemError(f"cannot read slide {path}: {exc}") from None


class _LevelSlide(ImageSource):
    """A multi-resolution slide: regions come from level 0, thumbnails from the closest level."""

    _slide: object  # a TiffSlide or an OpenSlide: both expose level_dimensions / level_downsamples

    def _level_region(self, level: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """RGB pixels of ``level``; ``(x0, y0)`` in level-0 coordinates, ``w × h`` in level pixels."""
        raise NotImplementedError

    def _read(self, x0, y0, w, h):
        try:
            return self._level_region(0, x0, y0, w, h)
        except StemError:
            raise
        except Exception as exc:
            raise StemError(f"cannot read region of {self.path}: {exc}") from None

    def thumbnail(self, max_side, block: int = 4096):
        downs = self._slide.level_downsamples
        target = max(self.width, self.height) / max_side
        level = max((i for i, d in enumerate(downs) if d <= max(target, 1)), default=0)
        lw, lh = self._slide.level_dimensions[level]
        scale = min(1.0, max_side / max(self.width, self.height))
        size = (max(1, round(self.width * scale)), max(1, round(self.height * scale)))
        if max(lw, lh) <= 2 * block:
            arr = self._level_region(level, 0, 0, lw, lh)
            return np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BILINEAR)), scale
        # no small enough level (a flat or shallow TIFF): shrink block by block, never the whole level
        out = Image.new("RGB", size, (255, 255, 255))
        f = size[0] / lw
        down = downs[level]
        for y in range(0, lh, block):
            for x in range(0, lw, block):
                w, h = min(block, lw - x), min(block, lh - y)
                tile = self._level_region(level, round(x * down), round(y * down), w, h)
                x0, y0, x1, y1 = round(x * f), round(y * f), round((x + w) * f), round((y + h) * f)
                if x1 > x0 and y1 > y0:
                    small = Image.fromarray(tile).resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR)
                    out.paste(small, (x0, y0))
        return np.asarray(out), scale

    def close(self):
        self._slide.close()


class SlideImage(_LevelSlide):
    """A (pyramidal) TIFF-family slide read lazily with tiffslide."""

    def __init__(self, path: Path):
        import tiffslide

        self.path = path
        try:
            self._slide = tiffslide.TiffSlide(str(path))
            self.width, self.height = self._slide.dimensions
        except Exception as exc:
            raise StemError(f"cannot read slide {path}: {exc}") from None
        _check_levels(path)
        mpp = self._slide.properties.get("tiffslide.mpp-x")
        self.mpp = float(mpp) if mpp else _tiff_resolution_mpp(path)

    def _level_region(self, level, x0, y0, w, h):
        return rgb(np.asarray(self._slide.read_region((x0, y0), level, (w, h), as_array=True)))


def _openslide(path: Path):
    """The openslide module, or a one-line error naming what to install."""
    try:
        import openslide
    except (ImportError, OSError) as exc:
        raise StemError(f"{path.name}: reading {path.suffix} slides needs OpenSlide "
                        f"(pip install openslide-python openslide-bin): {exc}") from None
    return openslide


def openslide_vendor(path: Path) -> str | None:
    """The OpenSlide vendor of ``path`` ('mirax', 'philips', …), or None (unknown format or no OpenSlide)."""
    try:
        return _openslide(path).OpenSlide.detect_format(str(path))
    except Exception:
        return None


class OpenSlideImage(_LevelSlide):
    """A slide read lazily with OpenSlide: MIRAX, Hamamatsu VMS/VMU, Leica SCN, Philips TIFF, Sakura,
    Ventana BIF, DICOM, Zeiss CZI, … (pixels outside the scanned area come back white)."""

    def __init__(self, path: Path):
        openslide = _openslide(path)
        self.path = path
        if path.suffix.lower() in TIFF_SUFFIXES | {".scn", ".bif"}:
            _check_levels(path)
        try:
            self._slide = openslide.OpenSlide(str(path))
            self.width, self.height = self._slide.dimensions
        except Exception as exc:
            raise StemError(f"cannot read slide {path}: {exc}") from None
        self.vendor = self._slide.properties.get("openslide.vendor")
        mpp = self._slide.properties.get("openslide.mpp-x")
        self.mpp = float(mpp) if mpp else None
        self.quickhash = self._slide.properties.get("openslide.quickhash-1")

    def _level_region(self, level, x0, y0, w, h):
        return rgb(np.asarray(self._slide.read_region((x0, y0), level, (w, h))))


def _tiff_resolution_mpp(path: Path) -> float | None:
    """µm per pixel from TIFF XResolution/ResolutionUnit tags, when they are meaningful."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            res, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
            if res is None or unit is None:
                return None
            num, den = res.value
            per_unit = num / den if den else 0
            um = {2: 25400.0, 3: 10000.0}.get(int(unit.value))
            if not um or per_unit <= 0:
                return None
            mpp = um / per_unit
            return mpp if 0.05 < mpp < 100 else None  # 72 dpi placeholders are not real
    except Exception:
        return None
