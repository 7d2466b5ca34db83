"""Section images and whole-slide images behind one small region-reading interface.

Whole-slide images are read region by region, so a 40 000² slide is never held in memory: the
vendor formats (MRXS, VMS/VMU, SCN, Philips TIFF, …) through OpenSlide, plain/Aperio/NDPI TIFFs
through tiffslide. JPEG/PNG cannot be decoded partially; they are decoded
once, on first use.
"""

from __future__ import annotations

import glob
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import StemError
from .image_source import ImageSource, rgb
from .slides import (
    OPENSLIDE_SUFFIXES,
    SLIDE_SUFFIXES,
    TIFFSLIDE_VENDORS,
    OpenSlideImage,
    SlideImage,
    openslide_vendor,
)


def _open_pil(path: Path) -> Image.Image:
    """``Image.open`` without PIL's decompression-bomb warning or error: section images are
    legitimately large, and the caller's own pixel budget decides (``--max-pixels``)."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


class PILImage(ImageSource):
    """A JPEG/PNG/plain image, decoded once on first access."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with _open_pil(path) as im:
                self.width, self.height = im.size
        except Exception as exc:
            raise StemError(f"cannot read image {path}: {exc}") from None
        self._arr: np.ndarray | None = None

    def array(self) -> np.ndarray:
        """The whole image as an RGB uint8 array."""
        if self._arr is None:
            try:
                with _open_pil(self.path) as im:
                    im.load()
                    self._arr = rgb(np.asarray(im.convert("RGBA" if "A" in im.mode else "RGB")))
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
                with _open_pil(self.path) as im:
                    im.draft("RGB", size)
                    small = rgb(np.asarray(im.convert("RGBA" if "A" in im.mode else "RGB")))
            except Exception as exc:
                raise StemError(f"cannot decode image {self.path}: {exc}") from None
            return np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)), scale
        im = Image.fromarray(self.array()).resize(size, Image.Resampling.BILINEAR)
        return np.asarray(im), scale

    def close(self):
        self._arr = None


def open_image(path: str | os.PathLike) -> ImageSource:
    """Open an image lazily, choosing the reader from the suffix and, for TIFFs, OpenSlide's vendor.

    OpenSlide reads the vendor formats (MRXS, VMS/VMU, SCN, Philips TIFF, …) and anything the
    preferred reader cannot open but OpenSlide recognises; tiffslide reads plain, Aperio and NDPI
    TIFFs (also when OpenSlide is not installed); PIL reads JPEG/PNG.
    """
    p = Path(path)
    if not p.is_file():
        raise StemError(f"image not found: {p}")
    suffix = p.suffix.lower()
    vendor = openslide_vendor(p)
    if suffix in OPENSLIDE_SUFFIXES and not (suffix in {".scn", ".bif"} and vendor is None):
        return OpenSlideImage(p)
    reader = SlideImage if suffix in SLIDE_SUFFIXES else PILImage
    if vendor not in TIFFSLIDE_VENDORS and reader is SlideImage:
        return OpenSlideImage(p)
    try:
        return reader(p)
    except StemError:
        if vendor is None:
            raise
        return OpenSlideImage(p)  # e.g. an odd suffix or a TIFF variant only OpenSlide understands


def _companions(p: Path) -> list[Path]:
    """Data files of a multi-file slide (VMS/VMU image files, the MRXS folder) beside its index."""
    if p.suffix.lower() not in {".mrxs", ".vms", ".vmu"}:
        return []
    folder = p.with_suffix("")
    found = sorted(folder.rglob("*")) if folder.is_dir() else []
    return found + sorted(q for q in p.parent.glob(glob.escape(p.stem) + "*") if q != p)


def file_fingerprint(path: str | os.PathLike) -> str:
    """A cheap identity of a file's content: size, mtime and a hash of its first/last MiB (and the
    size and mtime of a multi-file slide's data files)."""
    p = Path(path)
    st = p.stat()
    h = hashlib.sha256(f"{st.st_size}:{int(st.st_mtime)}".encode())
    with open(p, "rb") as fh:
        h.update(fh.read(1 << 20))
        if st.st_size > 2 << 20:
            fh.seek(-(1 << 20), os.SEEK_END)
            h.update(fh.read(1 << 20))
    for q in _companions(p):
        if q.is_file():
            qs = q.stat()
            h.update(f"{q.name}:{qs.st_size}:{int(qs.st_mtime)}".encode())
    return h.hexdigest()[:16]
