"""Rich tables and the live job display shared by the ``bioprop`` commands.

One place renders a job: :func:`progress_table` (per setting: status, epoch, validation
accuracy or, for detection, COCO mAP, and mean alignment angle) while it runs, :func:`results_table` when it is done,
:func:`jobs_table` for a page of jobs and :func:`measures_table` for a benchmark's
``{measure: value}``. :func:`watch` follows a job over HTTP with a live progress table.
The metric names are the ones the trainers log (``docs/architecture.md``).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from service.client import FINAL_STATES, Client
from trainers.catalogue import RULES, TASKS

__all__ = [
    "best_table",
    "seeds_table",
    "console",
    "err",
    "jobs_table",
    "live_or_lines",
    "progress_lines",
    "measures_table",
    "progress_table",
    "results_table",
    "state",
    "watch",
    "when",
]

console = Console()
err = Console(stderr=True)

STATE_STYLE = {
    "PENDING": "yellow",
    "RUNNING": "cyan",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLING": "magenta",
    "CANCELLED": "magenta",
}


def state(value: str) -> str:
    """A job state in its colour."""
    return f"[{STATE_STYLE.get(value, 'white')}]{value}[/]"


def when(value: str | None) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM:SS`` ("-" when unset)."""
    return value.replace("T", " ")[:19] if value else "-"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    return table


def _headline(task: str | None, children: list[dict[str, Any]]) -> tuple[str, str]:
    """The metric a job is judged by and its column name: the task's headline metric
    (``trainers.catalogue``; without a task, the first task whose headline every child that
    logged metrics logged)."""
    if task is None:
        logged = [m for m in (child.get("metrics") or {} for child in children) if m]
        task = next(
            (t for t, e in TASKS.items() if logged and all(e.headline in m for m in logged)),
            "classify",
        )
    entry = TASKS.get(task, TASKS["classify"])
    return entry.headline, entry.label


def _scores(metrics: dict[str, Any], headline: str) -> tuple[str, str]:
    """The headline metric and the mean alignment angle, formatted ("-" when not logged)."""
    return _fmt(metrics.get(headline), ".3f"), _fmt(metrics.get("align_mean_angle"), ".1f")


def _children(job: dict[str, Any]) -> list[dict[str, Any]]:
    progress = job.get("progress") or {}
    return progress.get("children") or (job.get("result") or {}).get("children") or []


def _labels(spec: dict[str, Any] | None, most: int = 200) -> list[str]:
    """The sweep-setting labels a spec will run (its rule names when it is a plain sweep),
    the first ``most`` of them (settings are built one at a time, never the whole grid)."""
    from trainers.spec import ExperimentSpec

    try:
        loaded = ExperimentSpec.model_validate(spec or {})
    except ValueError:
        return []
    if loaded.search is not None:  # a search's labels carry the values it samples
        return []
    return [label for label, _ in itertools.islice(loaded.settings(), most)]


def _status(child: dict[str, Any]) -> str:
    """A child's status; a trial ASHA stopped early says so, with the epoch."""
    if child.get("stopped_early"):
        return f"STOPPED at epoch {child.get('stopped_at_epoch', '?')}"
    return str(child.get("status", "-"))


def progress_table(job: dict[str, Any]) -> Table:
    """Per-setting epoch / accuracy / alignment of a job, as a rich table."""
    spec = job.get("spec") or {}
    epochs = spec.get("schedule", {}).get("epochs")
    headline, column = _headline(spec.get("task"), _children(job))
    table = _table(
        f"job {job['id']} {job['name']} ({job.get('owner') or 'no owner'}): {state(job['state'])}",
        ("setting", "status", "epoch", column, "mean angle (deg)"),
    )
    seen = set()
    for child in _children(job):
        metrics = child.get("metrics") or {}
        epoch = metrics.get("epoch")
        epoch_text = "-" if epoch is None else f"{int(epoch)}" + (f"/{epochs}" if epochs else "")
        label = child.get("setting") or child.get("rule")
        table.add_row(str(label), _status(child), epoch_text, *_scores(metrics, headline))
        seen.add(label)
    for label in _labels(job.get("spec")):
        if label not in seen:
            table.add_row(label, "waiting", "-", "-", "-")
    return table


def results_table(children: list[dict[str, Any]], *, title: str, task: str | None = None) -> Table:
    """Final status, accuracy (mAP for detection) and alignment of each setting of a job."""
    headline, column = _headline(task, children)
    columns = ("setting", "status", f"final {column}", "mean alignment angle (deg)")
    table = _table(title, columns)
    for child in children:
        table.add_row(
            str(child.get("setting") or child.get("rule")),
            _status(child),
            *_scores(child.get("metrics") or {}, headline),
        )
    return table


def best_table(rows: list[dict[str, Any]], *, title: str) -> Table:
    """Per rule, the best setting of a sweep or search (``result["best"]``): its metric and
    its MLflow child run."""
    table = _table(title, ("rule", "best setting", "metric", "value", "epochs", "child run"))
    for row in rows:
        table.add_row(
            str(row["rule"]),
            str(row["setting"]),
            str(row["metric"]),
            _fmt(row.get("value"), ".4f"),
            str(row.get("epochs", "-")),
            str(row.get("run_id")),
        )
    return table


def seeds_table(rows: list[dict[str, Any]]) -> Table:
    """Per setting, its metric over the swept seeds (``result["over_seeds"]``): mean ± sample
    std, range and how many seeds reported it; what a comparison of rules rests on."""
    seeds = max(row["seeds"] for row in rows)
    table = _table(f"over {seeds} seeds", ("setting", "metric", "mean ± std", "min-max", "seeds"))
    for row in rows:
        table.add_row(
            str(row["setting"]),
            str(row["metric"]),
            f"{row['mean']:.4f} ± {row['std']:.4f}",
            f"{row['min']:.4f}-{row['max']:.4f}",
            f"{row['n']}/{row['seeds']}",
        )
    return table


def jobs_table(page: dict[str, Any], *, offset: int) -> Table:
    """One page of ``GET /v1/experiments``."""
    table = Table(title=f"jobs {offset + 1}-{offset + len(page['items'])} of {page['total']}")
    table.add_column("id", no_wrap=True, min_width=16)
    for column in ("name", "owner", "state", "rules", "created", "finished"):
        table.add_column(column)
    for job in page["items"]:
        rules = (job.get("spec") or {}).get("rule", {}).get("name", "-")
        table.add_row(
            job["id"],
            job["name"],
            job.get("owner") or "-",
            state(job["state"]),
            ",".join(rules) if isinstance(rules, list) else str(rules),
            when(job["created_at"]),
            when(job["finished_at"]),
        )
    return table


def measures_table(title: str, measures: dict[str, Any]) -> Table:
    """A benchmark's ``{measure: value}``, floats to two decimals."""
    table = _table(title, ("measure", "value"))
    for key, value in measures.items():
        table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    return table


def progress_lines(job: dict[str, Any], seen: dict[str, tuple[Any, ...]]) -> list[str]:
    """The progress of a job as plain lines, for output that is not a terminal (a batch
    job's log): one line per setting whose status or epoch changed since ``seen`` (updated
    here), so at most one per setting per epoch (epochs shorter than the polling interval
    share a line), e.g. ``fa lr=0.1: epoch 2/6 val accuracy 0.931 angle 45.2 RUNNING``."""
    spec = job.get("spec") or {}
    epochs = spec.get("schedule", {}).get("epochs")
    headline, column = _headline(spec.get("task"), _children(job))
    lines = []
    for child in _children(job):
        metrics = child.get("metrics") or {}
        label = str(child.get("setting") or child.get("rule"))
        epoch = metrics.get("epoch")
        key = (_status(child), epoch)
        if seen.get(label) == key or epoch is None and key[0] == "RUNNING":
            continue
        seen[label] = key
        score, angle = _scores(metrics, headline)
        done = "-" if epoch is None else f"{int(epoch)}" + (f"/{epochs}" if epochs else "")
        lines.append(f"{label}: epoch {done} {column} {score} angle {angle} {key[0]}")
    return lines


def live_or_lines(transient: bool = False):
    """A live table on a terminal, else :class:`LineProgress`: ``with`` it, then
    ``.update(job)``. The live table never takes over stdout/stderr (``bioprop run``
    sends those to its log file, :mod:`service.quiet`)."""
    from rich.live import Live

    if not console.is_terminal:
        return LineProgress()
    return _LiveTable(
        Live(
            console=console,
            refresh_per_second=2,
            transient=transient,
            redirect_stdout=False,
            redirect_stderr=False,
        )
    )


class _LiveTable:
    def __init__(self, live: Any) -> None:
        self.live = live

    def __enter__(self) -> _LiveTable:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(*exc)

    def update(self, job: dict[str, Any]) -> None:
        self.live.update(progress_table(job))


class LineProgress:
    """Progress as plain lines (:func:`progress_lines`), no control characters."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[Any, ...]] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, job: dict[str, Any]) -> None:
        for line in progress_lines(job, self.seen):
            console.print(line, markup=False, highlight=False, soft_wrap=True)


def watch(
    client: Client, job_id: str, *, poll: float = 2.0, transient: bool = False
) -> dict[str, Any]:
    """Follow a job with a live progress table (plain lines when the output is not a
    terminal) until it reaches a final state; return it."""
    job = client.get(job_id)
    with live_or_lines(transient) as progress:
        progress.update(job)
        while job["state"] not in FINAL_STATES:
            time.sleep(poll)
            job = client.get(job_id)
            progress.update(job)
    return job


def rules_table() -> Table:
    """Every rule of the catalogue: its paper and its ``rule.params`` (default, type, meaning)."""
    table = _table(
        "rules (rule.name) and their parameters (rule.params)", ("rule", "paper", "params")
    )
    for name, entry in RULES.items():
        params = "\n".join(
            f"{key} = {p.default!r} ({p.type_name}): {p.doc}" for key, p in entry.params.items()
        )
        table.add_row(name, entry.paper, params or "-")
    return table
