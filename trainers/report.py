"""The sweep's comparison report: one self-contained HTML page (inline SVG and script, no
network), written as the parent run's artifact ``sweep_report.html`` (MLflow's artifact view
shows it inline), by ``bioprop report JOB_ID`` and by ``GET /v1/experiments/{id}/report``.

What it shows, from :func:`trainers.summary.summarize` (the children's metrics as logged):

- the table of settings, one row each, sortable by any column (click its header): status,
  epochs, final and best headline metric (``val_acc``; ``map`` for detection), ``val_loss``,
  mean alignment angle, and the child run id;
- three charts with one line per setting: the headline metric per epoch (axis 0-1), the mean
  alignment angle per epoch, and the final angle per layer against depth (input to output,
  the papers' figure); angles on a fixed 0-90 degree axis (0-180 when one passes 90).

Every setting keeps one colour, that of its rule (:func:`trainers.styles.setting_styles`,
the same as in ``sweep_summary.png``); settings of one rule differ by dash pattern. Values
are shown as measured (4 significant digits, the full value on hover): bp's angle of about
1e-6 degrees reads ``1e-06``, not 0.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from trainers.catalogue import TASKS
from trainers.styles import ANGLE, DASHES, setting_styles
from trainers.tracking import angle_limits

__all__ = ["REPORT_ARTIFACT", "report_html"]

REPORT_ARTIFACT = "sweep_report.html"

# chart geometry (SVG user units)
W, H = 440, 300
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 28, 64


def _num(value: Any) -> str:
    """A measured value as shown: 4 significant digits, '-' when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def _columns(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(row key, header) of the table, in order."""
    cols = [("setting", "setting"), ("rule", "rule"), ("status", "status"), ("epochs", "epochs")]
    for m in TASKS.get(summary["task"], TASKS["classify"]).summary:  # the headline first
        cols += [(f"final_{m}", f"final {m}"), (f"best_{m}", f"best {m}")]
    cols += [(f"final_{ANGLE}", "final mean angle (deg)"), (f"best_{ANGLE}", "best mean angle")]
    return [*cols, ("run_id", "child run")]


def _table(summary: dict[str, Any], styles: dict[str, tuple[str, int]]) -> str:
    cols = _columns(summary)
    head = "".join(
        f'<th data-key="{k}" title="sort by {html.escape(label)}">{html.escape(label)}</th>'
        for k, label in cols
    )
    body = []
    for row in summary["rows"]:
        cells = []
        for key, _ in cols:
            value = row.get(key)
            if key == "setting":
                colour = styles[row["setting"]][0]
                swatch = f'<span class="swatch" style="background:{colour}"></span>'
                cells.append(
                    f'<td data-key="setting" data-value="{html.escape(str(value))}">'
                    f"{swatch}{html.escape(str(value))}</td>"
                )
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.append(
                    f'<td class="num" data-key="{key}" data-value="{value!r}" '
                    f'title="{value!r}">{_num(value)}</td>'
                )
            elif key == "run_id" and value:
                cells.append(
                    f'<td data-key="run_id" data-value="{html.escape(value)}" '
                    f'title="{html.escape(value)}"><code>{html.escape(value[:8])}</code></td>'
                )
            else:
                text = "-" if value is None else str(value)
                cells.append(
                    f'<td data-key="{key}" data-value="{html.escape(text)}">'
                    f"{html.escape(text)}</td>"
                )
        setting = html.escape(str(row["setting"]))
        body.append(f'<tr data-setting="{setting}">{"".join(cells)}</tr>')
    return (
        f'<table id="settings"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def _chart(
    title: str,
    series: dict[str, list[tuple[float, float]]],
    styles: dict[str, tuple[str, int]],
    *,
    x_label: str,
    y_range: tuple[float, float],
    x_ticks: list[tuple[float, str]] | None = None,
    chart_id: str,
) -> str:
    """One SVG line chart on fixed axes; each point carries its exact value as a tooltip."""
    xs = [x for points in series.values() for x, _ in points]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = y_range
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        y = min(max(y, y0), y1)
        return TOP + (1 - (y - y0) / (y1 - y0)) * plot_h

    out = [
        f'<svg id="{chart_id}" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>',
        f'<text x="{W / 2}" y="16" class="title">{html.escape(title)}</text>',
    ]
    parts = 6 if y1 in (90.0, 180.0) else 4  # angles every 15 (30) degrees
    for i in range(parts + 1):  # horizontal grid and y labels
        y = y0 + (y1 - y0) * i / parts
        out.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py(y):.1f}" y2="{py(y):.1f}" class="grid"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" class="ylab">{y:g}</text>')
    if x_ticks is None:
        step = max(1, math.ceil((x1 - x0) / 8))
        x_ticks = [(float(x), f"{x:g}") for x in range(math.ceil(x0), math.floor(x1) + 1, step)]
    names = dict(x_ticks)  # the tooltip names a point by its tick (a layer's module path)
    for x, label in x_ticks:
        out.append(
            f'<text transform="translate({px(x):.1f},{H - BOTTOM + 14}) rotate(-30)" '
            f'class="xlab">{html.escape(label)}</text>'
        )
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{H - 6}" class="axis">{html.escape(x_label)}</text>'
    )
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>')
    for setting, points in series.items():
        if not points:
            continue
        colour, dash = styles[setting]
        dasharray = DASHES[dash % len(DASHES)][1]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        name = html.escape(setting)
        out.append(
            f'<g class="series" data-setting="{name}"><polyline points="{path}" '
            f'stroke="{colour}" stroke-dasharray="{dasharray}" fill="none" stroke-width="2"/>'
        )
        for x, y in points:
            label = names.get(x, f"{x:g}")
            out.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{colour}">'
                f"<title>{name} {html.escape(label)}: {y!r}</title></circle>"
            )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:18px;margin:0 0 4px}
p.sub{color:#555;margin:0 0 12px}
table{border-collapse:collapse;margin:8px 0 16px}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;white-space:nowrap}
th{cursor:pointer;background:#f4f4f4;user-select:none;white-space:normal;vertical-align:bottom}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.swatch{display:inline-block;width:10px;height:10px;margin-right:6px;border-radius:2px}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px 28px;
max-width:1400px;padding-left:12px}
svg{width:100%;height:auto;background:#fff;overflow:visible}
svg .title{font-size:13px;text-anchor:middle;font-weight:600}
svg .grid{stroke:#e6e6e6}svg .frame{fill:none;stroke:#999}
svg .ylab{font-size:10px;text-anchor:end}svg .xlab{font-size:10px;text-anchor:end}
svg .axis{font-size:11px;text-anchor:middle}
.legend span{margin-right:14px;white-space:nowrap}
"""

SCRIPT = """
document.querySelectorAll('#settings th').forEach((th, col) => {
  th.addEventListener('click', () => {
    const body = th.closest('table').tBodies[0];
    const asc = !th.classList.contains('asc');
    th.parentNode.querySelectorAll('th').forEach(h => h.classList.remove('asc', 'desc'));
    th.classList.add(asc ? 'asc' : 'desc');
    const key = td => {
      const v = td.dataset.value; const n = parseFloat(v);
      return v !== '' && !isNaN(n) && isFinite(v) ? n : v;
    };
    const rows = [...body.rows].sort((a, b) => {
      const x = key(a.cells[col]), y = key(b.cells[col]);
      const c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1);
      return asc ? c : -c;
    });
    rows.forEach(r => body.appendChild(r));
  });
});
"""


def report_html(summary: dict[str, Any], *, title: str, parent_run_id: str = "") -> str:
    """The report page for :func:`trainers.summary.summarize`'s dict (a whole document)."""
    headline = summary["headline"]
    styles = setting_styles(summary["rows"])
    curves, layers = summary["curves"], summary["layers"]
    angles = [v for c in curves.values() for _, v in c.get(ANGLE, [])]
    angles += [v for points in layers.values() for _, v in points]
    limits = angle_limits(angles)
    deepest = max(layers.values(), key=len, default=[])
    depth_ticks = [(float(i), name) for i, (name, _) in enumerate(deepest, start=1)]
    charts = [
        _chart(
            f"{headline} per epoch",
            {s: c.get(headline, []) for s, c in curves.items()},
            styles,
            x_label="epoch",
            y_range=(0.0, 1.0),
            chart_id="headline",
        ),
        _chart(
            "mean alignment angle (deg) per epoch",
            {s: c.get(ANGLE, []) for s, c in curves.items()},
            styles,
            x_label="epoch",
            y_range=limits,
            chart_id="angle",
        ),
        _chart(
            "final angle per layer (deg) against depth",
            {s: [(float(i), v) for i, (_, v) in enumerate(p, start=1)] for s, p in layers.items()},
            styles,
            x_label="layer (input to output)",
            y_range=limits,
            x_ticks=depth_ticks or None,
            chart_id="depth",
        ),
    ]
    legend = "".join(
        f'<span><span class="swatch" style="background:{colour}"></span>{html.escape(s)}</span>'
        for s, (colour, _) in styles.items()
    )
    # the table as data, for a reader's own scripts ("</" escaped: it cannot end the element)
    data = json.dumps({"headline": headline, "rows": summary["rows"]}, default=str)
    data = data.replace("</", "<\\/")
    sub = (
        f"{len(summary['rows'])} settings; parent run {html.escape(parent_run_id)}. "
        "Click a column header to sort. Values as measured (hover for the full value); "
        "best = highest "
        f"{html.escape(headline)}, lowest loss and angle over epochs."
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}: sweep report</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class='sub'>{sub}</p>"
        f"{_table(summary, styles)}<div class='legend'>{legend}</div>"
        f"<div class='charts'>{''.join(charts)}</div>"
        f"<script type='application/json' id='data'>{data}</script>"
        f"<script>{SCRIPT}</script></body></html>"
    )
