"""``bioprop run``: one experiment or sweep in this process, with a live progress table.

No control plane: the spec goes straight to ``trainers.launch.run_experiment`` (a local Ray
cluster unless ``--address`` or ``RAY_ADDRESS`` names one), and the progress table is read
from the run's MLflow store by a polling thread (plain lines, at most one per setting per epoch,
when the output is not a terminal).

The console is quiet (:mod:`service.quiet`): what Ray, Tune, Train and MLflow print goes to
``bioprop-runs/runs/<run id>/run.log`` (its path printed at start; ``--verbose`` shows it
too); warnings and errors still reach the console, once each, with their setting. SIGTERM
and Ctrl-C (SIGINT) end the run the same way: its MLflow runs KILLED, the resume command
printed, exit 143 or 130.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from service.tables import best_table, console, err, live_or_lines, results_table, seeds_table
from trainers.contracts import JobResult
from trainers.ray_setup import ray_connected

__all__ = ["SetOpt", "overridden", "run"]

SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="override a spec field, key=value (value as YAML), e.g. --set data.root=/data; "
        "repeatable",
    ),
]


def overridden(spec: Path, overrides: list[str]) -> dict[str, Any]:
    """The spec file as a dict with ``--set`` overrides applied, validated like any spec
    (``trainers.overrides``); a bad key or value prints the field and exits 2."""
    import yaml
    from pydantic import ValidationError
    from rich.markup import escape

    from trainers.overrides import OverrideError, apply_overrides
    from trainers.spec import ExperimentSpec, parse_yaml
    from trainers.spec_problems import describe

    try:
        data = parse_yaml(spec.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"spec must be a mapping, got {type(data).__name__}")
        data = apply_overrides(data, overrides)
        ExperimentSpec.model_validate(data)
    except (OverrideError, ValidationError, ValueError, yaml.YAMLError) as exc:
        if isinstance(exc, ValidationError):
            text = describe(exc)  # one line: field: problem; ...
        else:  # a YAML error points at the line: name the file, not "<unicode string>"
            text = str(exc).replace('"<unicode string>"', str(spec))
        err.print(f"[red]invalid spec {escape(str(spec))}:[/] {escape(text)}", soft_wrap=True)
        raise typer.Exit(2) from None
    return data


def run(
    spec: Annotated[Path, typer.Argument(help="spec file (YAML or JSON)", exists=True)],
    workers: Annotated[int | None, typer.Option(help="override scale.workers")] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (else RAY_ADDRESS)")
    ] = None,
    job_id: Annotated[
        str | None,
        typer.Option(
            help="resume this earlier run (its id is printed at start) instead of a new one"
        ),
    ] = None,
    set_: SetOpt = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="also show Ray's, Tune's and MLflow's output")
    ] = False,
) -> None:
    """Run one experiment or sweep in this process (local Ray unless an address is given)."""
    from service.quiet import QuietConsole
    from trainers.launch import (
        PreflightError,
        Terminated,
        preflight,
        run_experiment,
        terminated_on_sigterm,
    )
    from trainers.spec import ExperimentSpec

    loaded = ExperimentSpec.model_validate(overridden(spec, set_ or []))
    if workers is not None:
        loaded = loaded.model_copy(
            update={"scale": loaded.scale.model_copy(update={"workers": workers})}
        )
    if address:
        os.environ["RAY_ADDRESS"] = address
    try:  # before a job id is given out: nothing ran, there is nothing to resume
        loaded = preflight(loaded)
    except PreflightError as exc:  # the field, file or URI, not a traceback
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    job_id = job_id or uuid.uuid4().hex[:12]
    log_path = run_log(job_id)
    console.print(f"run [bold]{job_id}[/] (resume it with --job-id {job_id})", highlight=False)
    console.print(f"log: {log_path}", highlight=False, soft_wrap=True)
    joined = ray_connected()  # a caller's connection (a notebook, a test) stays
    try:
        with QuietConsole(log_path, [console, err], verbose=verbose):
            try:
                with terminated_on_sigterm(), LocalProgress(loaded, job_id):
                    result = run_experiment(loaded, job_id=job_id, preflighted=True)
            finally:
                if not joined:
                    _disconnect()  # Ray's tear-down prints into the log too
    except Terminated as exc:
        err.print(
            f"[red]terminated[/]: MLflow runs marked KILLED; resume with --job-id {job_id}",
            highlight=False,
        )
        raise typer.Exit(exc.exit_code) from None
    children = result.get("children", [])
    console.print(results_table(children, title=f"{loaded.name}", task=loaded.task))
    if len(children) > 1 and result.get("best"):
        console.print(best_table(result["best"], title="best setting per rule"))
    if result.get("over_seeds"):
        console.print(seeds_table(result["over_seeds"]))
    console.print(
        f"MLflow parent run {result.get('parent_run_id')} in {result.get('tracking_uri')}",
        soft_wrap=True,  # the URI whole, to copy
    )
    parsed = JobResult.parse(result)
    raise typer.Exit(1 if parsed is None or parsed.unfinished() else 0)


def _disconnect() -> None:
    """Leave Ray (stopping the local cluster this command started), quietly."""
    import signal

    if ray_connected():
        import ray

        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C waits
        try:
            ray.shutdown()
        finally:
            signal.signal(signal.SIGINT, previous)


def run_log(job_id: str) -> Path:
    """Where a ``bioprop run`` keeps what Ray, Tune, Train and MLflow print."""
    return Path.cwd() / "bioprop-runs" / "runs" / job_id / "run.log"


class LocalProgress:
    """A live per-setting table for an in-process run (plain lines when the output is not
    a terminal), polled from MLflow in a thread."""

    def __init__(self, spec: Any, job_id: str, poll: float = 2.0) -> None:
        self.job = {"id": job_id, "name": spec.name, "state": "RUNNING"}
        self.job["spec"] = spec.model_dump(mode="json")
        self.uri, self.poll = spec.tracking.uri, poll
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        from trainers.tracking import job_summary

        with live_or_lines(transient=True) as progress:
            progress.update(self.job)
            while True:
                stopping = self.stop.wait(self.poll)
                try:
                    self.job["progress"] = job_summary(self.job["id"], self.uri)
                except Exception:  # the store may not exist yet; try again next tick
                    if stopping:
                        return
                    continue
                progress.update(self.job)
                if stopping:  # a last read: the lines of the last epochs
                    return

    def __enter__(self) -> LocalProgress:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
