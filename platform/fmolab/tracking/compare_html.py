"""The comparison as one self-contained HTML page (``report.html``): the runs, the params that differ,
every final metric (the best of each row marked), the overlaid curves and each run's latest preview
animation side by side. Images are embedded as data URIs, so the file opens anywhere, offline, from
disk or from MLflow's artifact view."""
from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path

HIGHER_IS_BETTER = ("psnr", "ssim", "tiou", "animation_ratio")
STYLE = """body{font:14px system-ui,sans-serif;margin:24px;color:#222}h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}td.best{font-weight:bold;background:#e6f4e6}
.row{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}figcaption{font-size:12px;color:#555}img{max-width:100%}"""


def data_uri(path: str | Path) -> str:
    kind = {".png": "image/png", ".gif": "image/gif", ".webp": "image/webp"}[Path(path).suffix.lower()]
    return f"data:{kind};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"


def _cell(v) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(v))


def best_index(values: list[float], metric: str) -> int | None:
    finite = [(v, i) for i, v in enumerate(values) if isinstance(v, float) and math.isfinite(v)]
    if len(finite) < 2:
        return None
    higher = any(part in metric for part in HIGHER_IS_BETTER)
    return (max if higher else min)(finite)[1]


def table(head: list[str], body: list[list], best: list[int | None] | None = None) -> str:
    """Rows of cells; ``best[j]``: the row index whose cell ``j + 1`` is marked best (columns = runs)."""
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(body):
        cells = [f"<td>{_cell(row[0])}</td>"]
        for j, v in enumerate(row[1:]):
            mark = ' class="best"' if best and best[i] == j else ""
            cells.append(f"<td{mark}>{_cell(v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out + ["</table>"])


def build(runs: list, labels: list[str], diff: dict[str, list[str]], metric_keys: list[str],
          plots: list[str], previews: dict[str, str]) -> str:
    """The page; ``previews``: {label: a GIF/PNG path} of the runs that have one."""
    info = table(["run", *labels], [
        ["run id", *[r.info.run_id for r in runs]], ["status", *[r.info.status for r in runs]],
        ["end", *[r.data.tags.get("fmolab.end_reason", "-") for r in runs]],
        ["variant", *[r.data.tags.get("variant", "-") for r in runs]],
        ["dataset", *[r.data.tags.get("dataset", "-") for r in runs]]])
    params = table(["param", *labels], [[k, *v] for k, v in diff.items()]) if diff else "<p>All params are equal.</p>"
    rows = [[m, *[r.data.metrics.get(m, float("nan")) for r in runs]] for m in metric_keys]
    metrics = table(["metric (final value)", *labels], rows, [best_index(row[1:], row[0]) for row in rows])
    curves = "".join(f'<figure><img alt="{html.escape(Path(p).stem)}" src="{data_uri(p)}"><figcaption>'
                     f"{html.escape(Path(p).stem)}</figcaption></figure>" for p in plots)
    shown = "".join(f'<figure><img alt="preview of {html.escape(lab)}" src="{data_uri(p)}"><figcaption>'
                    f"{html.escape(lab)}: inputs | ground truth | prediction | alpha</figcaption></figure>"
                    for lab, p in previews.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fmolab comparison of {len(runs)} runs</title>
<style>{STYLE}</style></head><body>
<h1>Comparison of {len(runs)} runs</h1><p>Made by <code>fmolab runs compare</code> on {time.strftime('%Y-%m-%d %H:%M')}.</p>
<h2>Runs</h2>{info}
<h2>Params that differ</h2>{params}
<h2>Metrics</h2>{metrics}
<h2>Curves</h2><div class="row">{curves or '<p>No curves.</p>'}</div>
<h2>Latest previews</h2><div class="row">{shown or '<p>No run has a preview.</p>'}</div>
</body></html>
"""
