"""``bioprop demo``: start the control plane in this process, submit the packaged bp/fa/ss
sweep (``service/demo.yaml``) over HTTP, follow it live and print the results."""

from __future__ import annotations

import logging
import time
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
import yaml

from service.client import ApiError, Client
from service.tables import console, err, results_table, state, watch

__all__ = ["demo"]


def demo(
    spec: Annotated[Path | None, typer.Option(help="spec to run instead of the demo sweep")] = None,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 1800,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="also show the control plane's own log lines")
    ] = False,
) -> None:
    """Start the service, submit the bp/fa/ss sweep over HTTP, follow it, print the results."""
    from service.core.settings import Settings
    from service.quiet import QuietConsole

    settings = Settings(RUN_DIR=Path.cwd() / "bioprop-runs")
    text = (
        spec.read_text() if spec else resources.files("service").joinpath("demo.yaml").read_text()
    )
    log_path = settings.RUN_DIR / "demo.log"
    console.print(f"log: {log_path} (each job's driver log: its folder under jobs/)")
    started = time.monotonic()
    with QuietConsole(log_path, [console, err], verbose=verbose):
        job, metrics, tail = _run_demo(settings, text)
    elapsed = time.monotonic() - started
    _print_results(settings, job, metrics, tail, elapsed)


def _run_demo(settings, text: str):
    from service.api.server import ServerThread

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with ServerThread(settings) as server:
        console.print(f"control plane on {server.url} (job store {settings.DB_URL})")
        with Client(server.url) as client:
            try:
                job = client.submit(yaml.safe_load(text))
            except ApiError as exc:
                err.print(f"[red]error:[/] {exc}")
                raise typer.Exit(1) from exc
            console.print(f"submitted job [bold]{job['id']}[/] over HTTP")
            try:
                job = watch(client, job["id"], transient=True)
            except KeyboardInterrupt:
                client.cancel(job["id"])
                err.print(f"cancelled job {job['id']}")
                raise typer.Exit(130) from None
            metrics = client.metrics(job["id"])
            tail = client.logs(job["id"], tail=40) if job["state"] != "SUCCEEDED" else ""
    return job, metrics, tail


def _print_results(settings, job, metrics, tail: str, elapsed: float) -> None:
    children = metrics.get("children") or (job.get("result") or {}).get("children") or []
    title, task = f"{job['name']}: {state(job['state'])}", (job.get("spec") or {}).get("task")
    console.print(results_table(children, title=title, task=task))
    console.print(f"finished in {elapsed:.0f} s; MLflow parent run {metrics.get('parent_run_id')}")
    console.print(
        "open the MLflow UI: [bold]make mlflow-ui[/]  (mlflow ui --backend-store-uri "
        f"{settings.MLFLOW_URI} --port 5000), then http://127.0.0.1:5000: choose "
        "'Model training', open the experiment, expand the parent run (its Overview holds the "
        "summary table, its Artifacts sweep_summary.png)"
    )
    if job["state"] != "SUCCEEDED":
        err.print(f"[red]job {job['state']}[/]: {job.get('error') or ''}")
        if tail:
            err.print(tail)
        raise typer.Exit(1)
