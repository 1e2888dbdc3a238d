"""The sweep summary on the parent run: one table, one note, one figure comparing the settings.

:func:`write_summary` reads the parent's child runs back with ``MlflowClient`` and writes,
on the parent (each call rewrites all of it, so it is called after every child and at the
end of the sweep):

- per setting, the final and best value of the headline metric (``val_acc``; ``map`` for
  detection), of ``val_loss`` (classification) and of the mean alignment angle
  ``align_mean_angle``. "Best" is the maximum of ``val_acc``/``map`` and the minimum of
  ``val_loss`` and of the angle (the closest to backprop), over epochs, as rows of the table
  artifact ``sweep_summary.json`` (MLflow's table format, shown by the artifact viewer; not
  parent metrics, which MLflow's chart view would draw as one section per key beside the
  children's curves);
- the run note (``mlflow.note.content``), which opens on the table: per setting the final
  and best headline metric, the final mean angle, epochs and status, ranked by the final
  headline metric (:func:`_markdown`; MLflow 3.17's Overview shows the first 100 px of a
  note, a header and 3 rows, the rest behind "Show more"), then the command that
  reproduces the sweep from the parent's ``spec.yaml``;
- figures, one line per setting on shared axes with fixed ranges (accuracy or mAP 0-1,
  angles 0-90 degrees, or 0-180 when an angle passes 90): the headline metric per epoch,
  the mean alignment angle per epoch, and the final angle per layer against depth (the
  papers' figure): ``sweep_summary.png`` (all three) and ``summary/<name>.png`` (each alone);
- the interactive report ``sweep_report.html`` (:mod:`trainers.report`): the same, with a
  sortable table and exact values on hover.

Every setting is drawn in its rule's colour (:data:`RULE_COLOURS`, the same in the PNG and
the report; settings of one rule differ by dash pattern).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run, RunTag

from trainers.catalogue import TASKS
from trainers.contracts import TAG_NOTE, TAG_RULE, TAG_SETTING
from trainers.report import REPORT_ARTIFACT, report_html
from trainers.styles import ANGLE, DASHES, RULE_COLOURS, rule_colour, setting_styles
from trainers.tracking import (
    SPEC_ARTIFACT,
    angle_limits,
    default_tracking_uri,
    find_job_runs,
    layer_order,
    metric_name,
)

__all__ = [
    "job_report",
    "RULE_COLOURS",
    "SUMMARY_FIGURE",
    "SUMMARY_TABLE",
    "ranked",
    "rule_colour",
    "setting_styles",
    "summarize",
    "write_summary",
]

log = logging.getLogger(__name__)

SUMMARY_TABLE = "sweep_summary.json"
SUMMARY_FIGURE = "sweep_summary.png"


def _children(client: MlflowClient, parent: Run) -> list[Run]:
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
        max_results=1000,
        order_by=["attributes.start_time ASC"],
    )
    return list(runs)


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
    return [(s, v) for s, v in points if not math.isnan(v)]


def summarize(uri: str, parent_run_id: str) -> dict[str, Any]:
    """What :func:`write_summary` writes, as data: ``{"task", "headline", "rows", "curves",
    "layers"}``; ``rows`` has one dict per setting, ``curves[setting][metric]`` its history
    as ``[(epoch, value)]`` and ``layers[setting]`` its final ``[(layer, angle)]`` in model
    order."""
    client = MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    task = parent.data.params.get("task", "classify")
    entry = TASKS.get(task, TASKS["classify"])
    headline, tracked = entry.headline, [*entry.summary, ANGLE]
    rows, curves, layers = [], {}, {}
    for child in _children(client, parent):
        tags = child.data.tags
        setting = tags.get(TAG_SETTING) or tags.get(TAG_RULE) or child.info.run_id
        row: dict[str, Any] = {
            "setting": setting,
            "rule": tags.get(TAG_RULE),
            "status": child.info.status,
            "epochs": int(child.data.metrics.get("epoch", 0)),
            "run_id": child.info.run_id,
        }
        curves[setting] = {key: _history(client, child.info.run_id, key) for key in tracked}
        for key, points in curves[setting].items():
            values = [v for _, v in points]
            best = max if key == headline else min
            row[f"final_{key}"] = values[-1] if values else None
            row[f"best_{key}"] = best(values) if values else None
        metrics = child.data.metrics
        layers[setting] = [
            (layer, metrics[f"angle/{metric_name(layer)}"])
            for layer in layer_order(child)
            if f"angle/{metric_name(layer)}" in metrics
        ]
        rows.append(row)
    return {"task": task, "headline": headline, "rows": rows, "curves": curves, "layers": layers}


def _fmt(value: Any, digits: int) -> str:
    """``digits`` decimals; a value that would read 0 (bp's angle) in 2 significant digits."""
    if value is None:
        return "-"
    if value and abs(value) < 0.5 * 10**-digits:
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


NOTE_LIMIT = 8000  # MLflow's limit on a tag value
NOTE_ROWS = 12  # rows of the note's table; the others are in the report and the table


def ranked(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows by final headline metric, highest first (rows without one last)."""
    key = f"final_{summary['headline']}"
    return sorted(summary["rows"], key=lambda r: (r[key] is None, -(r[key] or 0.0)))


def _markdown(summary: dict[str, Any], parent: Run, uri: str) -> str:
    """The note; past MLflow's 8000 characters the table keeps its first rows and says so."""
    rows = summary["rows"]
    for keep in range(min(len(rows), NOTE_ROWS), -1, -1):
        text = _note(summary, parent, uri, keep)
        if len(text) <= NOTE_LIMIT:
            return text
    return text[:NOTE_LIMIT]


def report_link(parent: Run) -> str:
    """The MLflow UI's address (relative, a hash route) of the parent's report artifact."""
    return (
        f"#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
        f"/artifacts/{REPORT_ARTIFACT}"
    )


def _note(summary: dict[str, Any], parent: Run, uri: str, keep: int) -> str:
    headline = summary["headline"]
    # one-line headers (a wrapped header row would push a setting below MLflow's fold),
    # each followed by an em space: MLflow renders cells with 1 px of padding, left-aligned
    heads = [
        f"setting ([report]({report_link(parent)}))",
        f"final {headline}",
        f"best {headline}",
        "final angle (deg)",
        "epochs",
        "status",
    ]
    lines = ["| " + " | ".join(f"{h}&emsp;" for h in heads) + " |", "|" + " --- |" * 6]
    for row in ranked(summary)[:keep]:
        cells = [
            f"`{row['setting']}`",
            _fmt(row[f"final_{headline}"], 3),
            _fmt(row[f"best_{headline}"], 3),
            _fmt(row[f"final_{ANGLE}"], 1),
            str(row["epochs"]),
            row["status"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    total = len(summary["rows"])
    run_id = parent.info.run_id
    best_word = "val_acc" if headline == "val_acc" else "mAP"
    more = f" (the top {keep} here)" if keep < total else ""
    return "\n".join(
        [
            *lines,
            "",
            f"**{parent.data.tags.get('mlflow.runName', run_id)}**: {total} settings "
            f"compared{more}, ranked by final {headline}; every setting and column in the "
            "interactive report `sweep_report.html` (sortable table, curves, angle against "
            f"depth) and the table `{SUMMARY_TABLE}`.",
            "",
            f"Best: the highest {best_word} and the lowest angle over epochs. Angles are "
            "degrees between each layer's `W` and the matrix its backward pass uses, "
            "averaged over layers not on BP (bp's ~1e-6 is float round-off, shown as measured).",
            "",
            f"Figures: `{SUMMARY_FIGURE}` (artifacts): {headline} and mean angle per epoch, "
            "final angle per layer against depth, one colour per rule. Compare the children "
            "in the chart view grouped by the `bioprop.rule` tag; `angle_by_depth` is the "
            "final angle per layer against depth (step = layer, 1 nearest the input).",
            "",
            "Reproduce (a new run of the same spec):",
            "",
            "```",
            f"export MLFLOW_TRACKING_URI={uri}",
            f"mlflow artifacts download -r {run_id} -a {SPEC_ARTIFACT} -d .",
            f"bioprop run {SPEC_ARTIFACT}",
            "```",
            "",
        ]
    )


def _figures(summary: dict[str, Any], out: Path) -> list[Path]:
    """Draw the three panels together and each alone; returns the written PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    headline = summary["headline"]
    title = TASKS.get(summary["task"], TASKS["classify"]).title
    panels = [
        (headline, title, "per epoch"),
        ("mean_angle", "mean alignment angle (deg)", "per epoch"),
        ("angle_by_layer", "final angle per layer (deg)", "against depth"),
    ]
    angles = [v for c in summary["curves"].values() for _, v in c.get(ANGLE, [])]
    angles += [v for layers in summary["layers"].values() for _, v in layers]
    limits = angle_limits(angles)

    styles = setting_styles(summary["rows"])

    def draw(ax, panel: str) -> None:
        for setting in summary["curves"]:
            colour, dash = styles[setting]
            style = {"color": colour, "linestyle": DASHES[dash % len(DASHES)][0], "marker": "o"}
            if panel == "angle_by_layer":
                layers = summary["layers"][setting]
                if layers:
                    x = range(1, len(layers) + 1)
                    ax.plot(x, [v for _, v in layers], label=setting, clip_on=False, **style)
            else:
                key = headline if panel != "mean_angle" else ANGLE
                points = summary["curves"][setting].get(key, [])
                if points:
                    ax.plot(*zip(*points, strict=True), label=setting, clip_on=False, **style)
        ax.grid(alpha=0.3)
        if panel == "angle_by_layer":
            names = max(summary["layers"].values(), key=len, default=[])
            ax.set_xticks(range(1, len(names) + 1))
            ax.set_xticklabels([n for n, _ in names], rotation=35, ha="right", fontsize=8)
            ax.set_xlabel("layer (input to output)")
            ax.set_ylim(*limits)
        else:
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_ylim(*(limits if panel == "mean_angle" else (0, 1)))

    written = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for ax, (panel, label, how) in zip(axes, panels, strict=True):
        draw(ax, panel)
        ax.set_title(f"{label} {how}")
    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[2].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(6, len(labels)), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    written.append(out / SUMMARY_FIGURE)
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    (out / "summary").mkdir(exist_ok=True)
    for panel, label, how in panels:
        fig, ax = plt.subplots(figsize=(6.4, 4.6))
        draw(ax, panel)
        ax.set_title(f"{label} {how}")
        if ax.lines:
            ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out / "summary" / f"{panel}.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


def _table_file(rows: list[dict[str, Any]], path: Path) -> None:
    """``rows`` in MLflow's table format (pandas ``orient="split"``), as ``log_table`` writes."""
    import pandas as pd

    pd.DataFrame(rows).to_json(path, orient="split", index=False, double_precision=15)


def write_summary(uri: str, parent_run_id: str) -> dict[str, Any] | None:
    """(Re)write the parent run's sweep summary from its children as they are now.

    Safe to call at any point and from several drivers (each call writes the whole summary).
    Returns :func:`summarize`'s dict, or None when writing failed: a summary is a reading
    aid and never fails a sweep (the error is logged).
    """
    try:
        return _write(uri, parent_run_id)
    except Exception:
        log.exception("could not write the sweep summary of parent run %s", parent_run_id)
        return None


def _write(uri: str, parent_run_id: str) -> dict[str, Any]:
    client = MlflowClient(uri)
    summary = summarize(uri, parent_run_id)
    parent = client.get_run(parent_run_id)
    tags = [RunTag(TAG_NOTE, _markdown(summary, parent, uri))]
    logged = json.loads(parent.data.tags.get("mlflow.loggedArtifacts", "[]"))
    if {"path": SUMMARY_TABLE, "type": "table"} not in logged:
        logged.append({"path": SUMMARY_TABLE, "type": "table"})
        tags.append(RunTag("mlflow.loggedArtifacts", json.dumps(logged)))
    client.log_batch(parent_run_id, tags=tags)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if summary["rows"]:
            _table_file(summary["rows"], out / SUMMARY_TABLE)
            _figures(summary, out)
            title = parent.data.tags.get("mlflow.runName", parent_run_id)
            page = report_html(summary, title=title, parent_run_id=parent_run_id)
            (out / REPORT_ARTIFACT).write_text(page, encoding="utf-8")
            client.log_artifacts(parent_run_id, str(out))
    return summary


def job_report(job_id: str, tracking_uri: str | None = None) -> str | None:
    """The report of a job's sweep, read from MLflow now; None when it has no runs yet."""
    uri = default_tracking_uri(tracking_uri)
    parent, _ = find_job_runs(job_id, uri)
    if parent is None:
        return None
    summary = summarize(uri, parent.info.run_id)
    title = parent.data.tags.get("mlflow.runName", parent.info.run_id)
    return report_html(summary, title=title, parent_run_id=parent.info.run_id)
