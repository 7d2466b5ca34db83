"""``stem view``: one self-contained, offline HTML page to look at a prediction on its H&E.

The page embeds a downsampled H&E (JPEG, data URI), the spots as SVG circles of their physical
diameter, and per gene the truth / prediction / std / error values (float32, base64); its script
(``viewer.js``, no library, no network: a Content-Security-Policy forbids any fetch) does the gene
search, layer switch, shared colour scales, hover read-out, pan and zoom. A `stem complete apply`
output shows measured / completed / sd-over-completions layers, in counts.
"""

from __future__ import annotations

import base64
import io
import json
from importlib import resources
from pathlib import Path

import anndata as ad
import numpy as np

from ..atomic import atomic_path
from ..data.readers.anndata_file import load_h5ad
from ..data.units import UNITS
from ..errors import require

LAYER_NAMES = {"truth": "measured", "prediction": "predicted", "draw": "one draw (the first sample)",
               "std": "std over samples", "error": "predicted − measured"}
#: per-spot layers (the same for every gene), from obs: name, scale
SPOT_LAYERS = {"shift": ("shift from the training data (percentile; > 0.99: beyond the training range)",
                         [0.0, 1.0])}
#: a `stem complete apply` output: measured counts, the completion and its spread over K completions
COMPLETED_NAMES = {"truth": "measured", "prediction": "completed", "std": "sd over K completions"}


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)


def _layers(pred: ad.AnnData, truth: ad.AnnData | None) -> tuple[dict[str, np.ndarray], str]:
    """(layer name → spots × genes, units): from `stem predict`/`predict-slide` (X = mean,
    layers['std']) or `predict_adata` (layers['stem_mean'/'stem_std'], counts in X)."""
    out = {}
    if "stem_mean" in pred.layers:
        out["prediction"] = _dense(pred.layers["stem_mean"])
        if "stem_std" in pred.layers:
            out["std"] = _dense(pred.layers["stem_std"])
        x = _dense(pred.X)
        if truth is None and np.all(x >= 0) and np.all(np.mod(x, 1) == 0):
            out["truth"] = np.log2(1 + x)
    else:
        out["prediction"] = _dense(pred.X)
        if "std" in pred.layers:
            out["std"] = _dense(pred.layers["std"])
    if truth is not None:
        out["truth"] = np.log2(1 + _dense(truth[pred.obs_names, pred.var_names].X))
    if "truth" in out:
        out["error"] = out["prediction"] - out["truth"]
    return out, str(pred.uns.get("stem", {}).get("units", UNITS))


def _one_draw(pred_path: Path, pred: ad.AnnData) -> np.ndarray | None:
    """The first sample of every spot (spots × genes), when the prediction kept its samples
    (``--keep-samples``: ``<name>.samples.npy`` beside it, named in ``uns['stem']``)."""
    path = pred_path.with_name(pred_path.stem + ".samples.npy")
    if not path.is_file() or pred.uns.get("stem", {}).get("samples_file") != path.name:
        return None  # none kept, or a stale file of an older prediction
    samples = np.load(path, mmap_mode="r")
    if samples.ndim != 3 or samples.shape[0] != pred.n_obs or samples.shape[2] != pred.n_vars:
        return None
    return np.asarray(samples[:, 0], dtype=np.float32)


def _completed_layers(pred: ad.AnnData) -> dict[str, np.ndarray]:
    """A `stem complete apply` output, all in counts: X = measured, layers['completed'] and
    (K ≥ 2) layers['completed_std']."""
    out = {"truth": _dense(pred.X), "prediction": _dense(pred.layers["completed"])}
    if "completed_std" in pred.layers:
        out["std"] = _dense(pred.layers["completed_std"])
    return out


def _truth_section(prep: Path, section: str | None, pred: ad.AnnData) -> ad.AnnData:
    from ..data.dataset import open_prepared

    ds = open_prepared(prep)
    require(section is not None, "give --section: the prediction does not name its section")
    sec = ds.section(section)
    missing_s = pred.obs_names.difference(sec.obs_names)
    require(len(missing_s) == 0, f"{len(missing_s)} predicted spots are not in {prep} section {section} "
                                 f"(e.g. {missing_s[0] if len(missing_s) else ''}); wrong --section?")
    missing_g = pred.var_names.difference(sec.var_names)
    require(len(missing_g) == 0, f"{len(missing_g)} predicted genes are not in {prep}'s panel "
                                 f"(e.g. {missing_g[0] if len(missing_g) else ''})")
    return sec


def _image(pred: ad.AnnData, truth: ad.AnnData | None, side: int) -> tuple[np.ndarray | None, float, float | None]:
    """(H&E thumbnail or None, full-res → thumbnail scale, spot diameter in full-res px or None)."""
    from ..data.images import open_image

    for lib in pred.uns.get("spatial", {}).values():
        img = lib.get("images", {}).get("hires")
        sf = lib.get("scalefactors", {})
        if img is not None and "tissue_hires_scalef" in sf:
            return np.asarray(img), float(sf["tissue_hires_scalef"]), sf.get("spot_diameter_fullres")
    info = dict(truth.uns.get("stem", {})) if truth is not None else {}
    info = info or dict(pred.uns.get("stem", {}))
    path = info.get("image_path") or info.get("image")
    known = info.get("spot_diameter_um") and info.get("mpp")
    diameter = info["spot_diameter_um"] / info["mpp"] if known else None
    if path and Path(path).is_file():
        with open_image(path) as src:
            thumb, scale = src.thumbnail(side)
        return thumb, scale, diameter
    return None, 1.0, diameter


def _jpeg_uri(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img)[..., :3].astype(np.uint8)).save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def colormap_hex(name: str, n: int = 256) -> list[str]:
    """``n`` colours of a matplotlib colormap as #rrggbb (the page's lookup table)."""
    import matplotlib

    rgb = (np.asarray(matplotlib.colormaps[name](np.linspace(0, 1, n)))[:, :3] * 255).round().astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb]


def _scales(layers: dict[str, np.ndarray]) -> dict[str, list]:
    expr = np.concatenate([layers[k] for k in ("truth", "prediction") if k in layers])
    out = {"expression": np.stack([np.minimum(expr.min(0), 0), np.percentile(expr, 99, axis=0)], 1)}
    if "std" in layers:
        out["std"] = np.stack([np.zeros(expr.shape[1]), np.percentile(layers["std"], 99, axis=0)], 1)
    if "error" in layers:
        e = np.percentile(np.abs(layers["error"]), 99, axis=0)
        out["error"] = np.stack([-e, e], 1)
    return {k: np.round(v.astype(float), 4).tolist() for k, v in out.items()}


def build_view(pred_path: str | Path, out: str | Path | None = None, truth_prep: str | Path | None = None,
               section: str | None = None, overwrite: bool = False, image_side: int = 2000) -> dict:
    """Write the viewer page for a prediction (and, with ``truth_prep``, its measured section), or
    for a completed file (``layers['completed']`` and ``['completed_std']``, X measured; no truth)."""
    pred_path = Path(pred_path)
    out = Path(out) if out else pred_path.with_name(pred_path.stem + "_view.html")
    require(out.suffix == ".html", f"--out must end in .html, got {out.name}")
    require(overwrite or not out.exists(), f"{out} already exists; pass --overwrite to replace it")
    pred = load_h5ad(pred_path)
    require(pred.n_obs > 0 and pred.n_vars > 0, f"{pred_path} holds no spots or no genes")
    require("spatial" in pred.obsm, f"{pred_path} has no obsm['spatial'] (spot centres)")
    completed = "completed" in pred.layers
    require(not (completed and truth_prep), f"{pred_path.name} is a completed file (stem complete apply): its "
                                            "measured counts are in X; leave out --truth")
    section = section or pred.uns.get("lgdist" if completed else "stem", {}).get("section")
    truth = _truth_section(Path(truth_prep), section, pred) if truth_prep else None
    layers, units = (_completed_layers(pred), "count") if completed else _layers(pred, truth)
    names = COMPLETED_NAMES if completed else LAYER_NAMES
    draw = None if completed else _one_draw(pred_path, pred)
    if draw is not None:  # one sampled map: the spread seen as tissue
        layers["draw"] = draw
    order = [k for k in ("truth", "prediction", "draw", "std", "error") if k in layers]
    xy_full = np.asarray(pred.obsm["spatial"], dtype=np.float64)
    xy = xy_full.copy()
    img, scale, diameter = _image(pred, truth, image_side)
    if img is None:  # no H&E: fit the spots into an image_side box
        scale = image_side / max(float(np.ptp(xy[:, 0])), float(np.ptp(xy[:, 1])), 1.0)
        xy = xy - xy.min(0)
    if not diameter:
        from scipy.spatial import cKDTree

        diameter = 0.8 * float(np.median(cKDTree(xy).query(xy, k=2)[0][:, 1])) if len(xy) > 1 else 10.0
    p = layers["prediction"]
    if "truth" in layers and not completed:
        t = layers["truth"]
        pcc = [np.corrcoef(t[:, j], p[:, j])[0, 1] if t[:, j].std() > 0 and p[:, j].std() > 0 else -1
               for j in range(pred.n_vars)]
        default = int(np.nanargmax(pcc))
    else:
        default = int(np.argmax(p.var(0)))
    sx, sy = xy[:, 0] * scale, xy[:, 1] * scale
    spot = {k: np.asarray(pred.obs[k], dtype=np.float32) for k in SPOT_LAYERS if k in pred.obs}
    order += list(spot)
    data = {
        "genes": list(map(str, pred.var_names)), "default_gene": str(pred.var_names[default]), "units": units,
        "layer_order": order, "layer_names": {k: names[k] if k in names else SPOT_LAYERS[k][0] for k in order},
        "spot_layers": {k: base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode()
                        for k, v in spot.items()},
        "spot_scales": {k: SPOT_LAYERS[k][1] for k in spot},
        "layers": {k: base64.b64encode(np.ascontiguousarray(v.T, dtype="<f4").tobytes()).decode()
                   for k, v in layers.items()},
        "scales": _scales(layers),
        "colormaps": {"sequential": colormap_hex("viridis"), "diverging": colormap_hex("RdBu_r")},
        "spots": {"ids": list(map(str, pred.obs_names)), "x": np.round(sx, 2).tolist(),
                  "y": np.round(sy, 2).tolist(), "fullres_x": np.round(xy_full[:, 0], 1).tolist(),
                  "fullres_y": np.round(xy_full[:, 1], 1).tolist(), "radius": round(diameter * scale / 2, 3)},
        "image": {"href": _jpeg_uri(img) if img is not None else None,
                  "width": int(img.shape[1]) if img is not None else int(np.ceil(sx.max() + diameter * scale)),
                  "height": int(img.shape[0]) if img is not None else int(np.ceil(sy.max() + diameter * scale))},
    }
    title = f"Stem-ST · {section or pred_path.stem}"
    footer = (f"{pred_path.name}: {pred.n_obs} spots × {pred.n_vars} genes; values in {units}; spots drawn at "
              f"their diameter ({diameter:.0f} px full resolution). Scroll to zoom, drag to pan.")
    page = resources.files(__package__).joinpath("viewer.html").read_text()
    script = resources.files(__package__).joinpath("viewer.js").read_text()
    html = (page.replace("__TITLE__", title).replace("__FOOTER__", footer)
            .replace("__SCRIPT__", script).replace("__DATA__", json.dumps(data).replace("</", "<\\/")))
    with atomic_path(out, overwrite=overwrite) as tmp:
        tmp.write_text(html)
    return {"file": str(out), "spots": pred.n_obs, "genes": pred.n_vars, "layers": ",".join(order),
            "image": img is not None, "megabytes": round(out.stat().st_size / 2**20, 1)}
