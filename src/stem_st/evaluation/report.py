"""A self-contained HTML report: metric table, protocol, and every figure embedded."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

TABLE_COLUMNS = ("method", "PCC-10", "PCC-50", "PCC-all", "MSE", "MAE", "RVD", "CRPS", "energy", "variogram",
                 "coverage50", "coverage80", "coverage95", "rank_coverage50",
                 "rank_coverage80", "rank_coverage95", "corr_err_sample", "corr_err_point",
                 "moran_err_sample", "moran_err_point", "spread_error_rho", "ARI", "NMI",
                 "num_samples", "genes_scored", "genes_zero_variance", "shift_median", "shift_flagged")
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:4px 8px;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}td.best{font-weight:bold;background:#e6f4e6}
figure{margin:1.5em 0}img{max-width:100%;border:1px solid #ddd}dt{font-weight:bold;float:left;width:16em}
dd{margin-left:17em}"""
LOWER_IS_BETTER = {"MSE", "MAE", "RVD", "CRPS", "energy", "variogram", "corr_err_sample", "corr_err_point",
                   "moran_err_sample", "moran_err_point"}


def _fmt(v) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4f}"
    return html.escape(str(v))


def _best(rows: list[dict], col: str) -> float | None:
    vals = [r[col] for r in rows if isinstance(r.get(col), float) and not math.isnan(r[col])
            and not str(r["method"]).startswith("truth")]
    if not vals or col not in {"PCC-10", "PCC-50", "PCC-all", "ARI", "NMI", "spread_error_rho", *LOWER_IS_BETTER}:
        return None
    return min(vals) if col in LOWER_IS_BETTER else max(vals)


def metric_table_html(rows: list[dict]) -> str:
    """The metric table; the best value of each score column is highlighted."""
    cols = [c for c in TABLE_COLUMNS if any(c in r for r in rows)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, float("nan"))
            best = _best(rows, c)
            cls = ' class="best"' if best is not None and isinstance(v, float) and v == best else ""
            cells.append(f"<td{cls}>{_fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="metrics"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def write_report(path: Path, title: str, rows: list[dict], protocol: dict, figures: list[tuple[str, Path]],
                 notes: list[str] | None = None, links: list[tuple[str, str]] | None = None) -> Path:
    """Write ``report.html`` with the table, the protocol, notes, links (to the interactive
    viewer pages beside it) and figures (base64 PNG)."""
    proto = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in protocol.items())
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes or [])
    figs = "".join(_img(p, cap) for cap, p in figures)
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<h2>Metrics</h2>{metric_table_html(rows)}"
            f"<p>Best value per column in bold (higher is better for PCC, ARI, NMI and spread_error_rho; "
            f"lower for MSE, MAE, RVD, CRPS, energy, variogram and the structure errors; coverageNN "
            f"should be near 0.NN). The probabilistic columns score samples: the protocol defines each."
            f"</p>"
            f"{'<ul>' + note_html + '</ul>' if note_html else ''}"
            + ("<h2>Look</h2><ul>" + "".join(f"<li><a href='{html.escape(href)}'>{html.escape(text)}</a></li>"
                                              for text, href in links) + "</ul>" if links else "")
            + f"<h2>Protocol</h2><dl>{proto}</dl><h2>Figures</h2>{figs}</body></html>")
    path.write_text(page, encoding="utf-8")
    return path
