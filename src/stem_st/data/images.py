"""Section images and whole-slide images behind one small region-reading interface.

Pyramidal and tiled TIFF/SVS/NDPI files are read region by region through tiffslide, so a
40 000² slide is never held in memory. JPEG/PNG cannot be decoded partially; they are decoded
once, on first use.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import StemError

Image.MAX_IMAGE_PIXELS = None  # section images are legitimately large
SLIDE_SUFFIXES = {".tif", ".tiff", ".svs", ".ndpi", ".scn", ".bif", ".qptiff"}


class ImageSource:
    """Read RGB regions of an image at full resolution, padding outside with white."""

    path: Path
    width: int
    height: int
    mpp: float | None = None  # µm per pixel from the file's own metadata, if it has any

    def _read(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        raise NotImplementedError

    def read_region(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """Return the ``h × w × 3`` uint8 region whose top-left corner is ``(x0, y0)``."""
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + w, self.width), min(y0 + h, self.height)
        if cx1 > cx0 and cy1 > cy0:
            out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = self._read(cx0, cy0, cx1 - cx0, cy1 - cy0)
        return out

    def thumbnail(self, max_side: int) -> tuple[np.ndarray, float]:
        """Return a downscaled RGB copy and its scale factor (thumbnail px per full-res px)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release file handles."""

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:  # composite transparent pixels onto white
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        arr = (arr[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])


class PILImage(ImageSource):
    """A JPEG/PNG/plain image, decoded once on first access."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with Image.open(path) as im:
                self.width, self.height = im.size
        except Exception as exc:
            raise StemError(f"cannot read image {path}: {exc}") from None
        self._arr: np.ndarray | None = None

    def array(self) -> np.ndarray:
        """The whole image as an RGB uint8 array."""
        if self._arr is None:
            try:
                with Image.open(self.path) as im:
                    im.load()
                    self._arr = _rgb(np.asarray(im.convert("RGBA" if "A" in im.mode else "RGB")))
            except Exception as exc:
                raise StemError(f"cannot decode image {self.path}: {exc}") from None
        return self._arr

    def _read(self, x0, y0, w, h):
        return self.array()[y0 : y0 + h, x0 : x0 + w]

    def thumbnail(self, max_side):
        scale = min(1.0, max_side / max(self.width, self.height))
        size = (max(1, round(self.width * scale)), max(1, round(self.height * scale)))
        if self._arr is None:  # not decoded yet: a JPEG decodes straight at 1/2-1/8 scale (draft mode)
            try:
                with Image.open(self.path) as im:
                    im.draft("RGB", size)
                    small = _rgb(np.asarray(im.convert("RGBA" if "A" in im.mode else "RGB")))
            except Exception as exc:
                raise StemError(f"cannot decode image {self.path}: {exc}") from None
            return np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)), scale
        im = Image.fromarray(self.array()).resize(size, Image.Resampling.BILINEAR)
        return np.asarray(im), scale

    def close(self):
        self._arr = None


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


class SlideImage(ImageSource):
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

    def _read(self, x0, y0, w, h):
        try:
            arr = self._slide.read_region((x0, y0), 0, (w, h), as_array=True)
        except Exception as exc:
            raise StemError(f"cannot read region of {self.path}: {exc}") from None
        return _rgb(np.asarray(arr))

    def thumbnail(self, max_side, block: int = 4096):
        downs = self._slide.level_downsamples
        target = max(self.width, self.height) / max_side
        level = max((i for i, d in enumerate(downs) if d <= max(target, 1)), default=0)
        lw, lh = self._slide.level_dimensions[level]
        scale = min(1.0, max_side / max(self.width, self.height))
        size = (max(1, round(self.width * scale)), max(1, round(self.height * scale)))
        if max(lw, lh) <= 2 * block:
            arr = _rgb(np.asarray(self._slide.read_region((0, 0), level, (lw, lh), as_array=True)))
            return np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BILINEAR)), scale
        # no small enough level (a flat or shallow TIFF): shrink block by block, never the whole level
        out = Image.new("RGB", size, (255, 255, 255))
        f = size[0] / lw
        down = downs[level]
        for y in range(0, lh, block):
            for x in range(0, lw, block):
                w, h = min(block, lw - x), min(block, lh - y)
                tile = _rgb(np.asarray(self._slide.read_region((round(x * down), round(y * down)), level, (w, h),
                                                               as_array=True)))
                x0, y0, x1, y1 = round(x * f), round(y * f), round((x + w) * f), round((y + h) * f)
                if x1 > x0 and y1 > y0:
                    small = Image.fromarray(tile).resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR)
                    out.paste(small, (x0, y0))
        return np.asarray(out), scale

    def close(self):
        self._slide.close()


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


def open_image(path: str | os.PathLike) -> ImageSource:
    """Open an image lazily, choosing the backend from the suffix."""
    p = Path(path)
    if not p.is_file():
        raise StemError(f"image not found: {p}")
    if p.suffix.lower() in SLIDE_SUFFIXES:
        return SlideImage(p)
    return PILImage(p)


def file_fingerprint(path: str | os.PathLike) -> str:
    """A cheap identity of a file's content: size, mtime and a hash of its first/last MiB."""
    p = Path(path)
    st = p.stat()
    h = hashlib.sha256(f"{st.st_size}:{int(st.st_mtime)}".encode())
    with open(p, "rb") as fh:
        h.update(fh.read(1 << 20))
        if st.st_size > 2 << 20:
            fh.seek(-(1 << 20), os.SEEK_END)
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]
