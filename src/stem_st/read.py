"""``stem_st.read``: each layout's reader, returning a section in the common AnnData form
(raw counts in ``X``, spot centres in full-resolution pixels in ``obsm['spatial']``, geometry and
provenance in ``uns['stem']``)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad

from .data.readers import ReaderOptions, read_section


def her2st(root: str | Path, section: str, image: str | None = None, image_scale: float | None = None,
           mpp: float | None = None) -> ad.AnnData:
    """One section of the HER2ST layout (``ST-cnts``, ``ST-spotfiles``, ``ST-imgs``)."""
    return read_section("her2st", root, section, ReaderOptions(image=image, image_scale=image_scale, mpp=mpp))


def visium(outs: str | Path, image: str | None = None, mpp: float | None = None) -> ad.AnnData:
    """A Space Ranger ``outs/`` folder (the hires/lowres PNG unless ``image`` is the full-res H&E)."""
    outs = Path(outs)
    section = outs.parent.name if outs.name == "outs" else outs.name
    return read_section("visium", outs, section, ReaderOptions(image=image, mpp=mpp))


def hest(root: str | Path, sample: str) -> ad.AnnData:
    """One sample of a HEST-1k folder (``st/``, ``wsis/``, ``metadata/``)."""
    return read_section("hest", root, sample)


def h5ad(path: str | Path, image: str, mpp: float | None = None, platform: str = "visium",
         counts_layer: str | None = None) -> ad.AnnData:
    """Any AnnData with raw counts (``X`` or ``counts_layer``) and ``obsm['spatial']``, plus its H&E."""
    path = Path(path)
    return read_section("h5ad", path, path.stem, ReaderOptions(image=image, mpp=mpp, platform=platform,
                                                               counts_layer=counts_layer))
