"""The ``bioprop`` command line: the root app and the commands that talk to a service.

Here: ``serve``, the HTTP commands ``submit``, ``status``, ``logs``, ``cancel`` (and
``bench service``, which measures them), and ``report`` (a job's comparison page, from the
service or straight from MLflow). Mounted from beside what they drive:
``run`` (``service/local.py``, in-process training with a live table), ``demo``
(``service/demo.py``), ``data ...`` (``data_pipelines/cli.py``) and ``bench rules|train|overhead``
(``trainers/cli.py``). Tables live in ``service/tables.py``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from data_pipelines.cli import app as data_app
from service.client import ApiError, Client
from service.demo import demo
from service.local import SetOpt, overridden, run
from service.tables import (
    best_table,
    console,
    err,
    jobs_table,
    measures_table,
    progress_table,
    rules_table,
    seeds_table,
    state,
    watch,
    when,
)
from trainers.cli import BENCHMARKS, preflight_cmd

app = typer.Typer(
    name="bioprop",
    help="Train networks with credit-assignment rules that need no weight transport.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(data_app, name="data", help="Build and benchmark datasets.")

DEFAULT_SERVER = "http://127.0.0.1:8000"
ServerOpt = Annotated[
    str, typer.Option("--server", help="control-plane URL", envvar="BIOPROP_SERVER")
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", help="bearer token of the service", envvar="BIOPROP_TOKEN"),
]


def _client(server: str, token: str | None) -> Client:
    return Client(server, token=token)


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/] {exc}")
    return typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    access_log: Annotated[bool, typer.Option(help="log every request")] = True,
    rebuild_store: Annotated[
        bool,
        typer.Option(
            help="rebuild the job store from the job folders under RUN_DIR/jobs (a corrupt "
            "SQLite file is moved aside), following drivers still running"
        ),
    ] = False,
) -> None:
    """Start the control plane (SQLite job store and local MLflow store unless configured)."""
    from rich.markup import escape

    from service.api.server import serve as run_server
    from service.core.preflight import preflight
    from service.core.settings import Settings

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings()
    if settings.open_api and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(
            f"[red]refusing to serve on {host} without BIOPROP_API_TOKENS[/]: "
            "an open API may only listen on 127.0.0.1"
        )
        raise typer.Exit(2)
    problems = preflight(settings)
    if problems:
        for problem in problems:
            # one line per problem, however wide: never wrapped to the terminal
            err.print(f"[red]cannot start:[/] {escape(problem)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    from service.core.store_check import StoreRefused

    try:
        run_server(
            settings, host=host, port=port, access_log=access_log, rebuild_store=rebuild_store
        )
    except StoreRefused as exc:
        err.print(f"[red]cannot start:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="spec file (YAML or JSON)", exists=True)],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Idempotency-Key header")] = None,
    priority: Annotated[
        int, typer.Option(help="order among your own PENDING jobs, -100..100, higher first")
    ] = 0,
    wait: Annotated[bool, typer.Option(help="wait for the job to finish")] = False,
    set_: SetOpt = None,
) -> None:
    """Submit a spec to a running service; prints the job id."""
    body: Path | dict = overridden(spec, set_) if set_ else spec
    with _client(server, token) as client:
        try:
            job = client.submit(body, idempotency_key=idempotency_key, priority=priority)
        except (ApiError, OSError, ValueError) as exc:
            raise _fail(exc) from exc
        console.print(f"submitted job [bold]{job['id']}[/] ({job['name']}): {state(job['state'])}")
        if wait:
            job = watch(client, job["id"])
            raise typer.Exit(0 if job["state"] == "SUCCEEDED" else 1)


@app.command()
def status(
    job_id: Annotated[str | None, typer.Argument(help="job id; none lists jobs")] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    state_: Annotated[list[str] | None, typer.Option("--state", help="filter by state")] = None,
    name: Annotated[str | None, typer.Option(help="filter by spec name")] = None,
    owner: Annotated[
        str | None, typer.Option(help="filter by owner (admins; a user sees only its own)")
    ] = None,
    limit: Annotated[int, typer.Option(help="page size")] = 20,
    offset: Annotated[int, typer.Option(help="page start")] = 0,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="with a job id: a live table until the job ends (plain lines, at most one per "
            "setting and epoch, when the output is not a terminal)",
        ),
    ] = False,
) -> None:
    """Show one job with its per-rule progress, or list jobs."""
    with _client(server, token) as client:
        try:
            if job_id:
                job = watch(client, job_id, transient=True) if follow else client.get(job_id)
                console.print(progress_table(job))
                result = job.get("result") or {}
                if result.get("best") and len(result.get("children") or []) > 1:
                    console.print(best_table(result["best"], title="best setting per rule"))
                if result.get("over_seeds"):
                    console.print(seeds_table(result["over_seeds"]))
                console.print(
                    f"owner {job.get('owner') or '-'}  "
                    f"created {when(job['created_at'])}  started {when(job['started_at'])}  "
                    f"finished {when(job['finished_at'])}  "
                    f"mlflow parent run {job.get('mlflow_parent_run_id') or '-'}"
                )
                if job.get("pending_reason"):
                    console.print(f"[yellow]pending:[/] {job['pending_reason']}")
                if job.get("error"):
                    console.print(f"[red]error:[/] {job['error']}")
                return
            page = client.list(
                state=state_,
                name=name,
                owner=owner,
                limit=limit,
                offset=offset,
                include_spec=True,
            )
        except ApiError as exc:
            raise _fail(exc) from exc
    console.print(jobs_table(page, offset=offset))


@app.command()
def logs(
    job_id: str,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="stream until the job ends")
    ] = False,
    tail: Annotated[int | None, typer.Option(help="last N lines")] = None,
) -> None:
    """Print a job's driver log."""
    with _client(server, token) as client:
        try:
            if follow:
                for chunk in client.follow_logs(job_id, tail=tail):
                    sys.stdout.write(chunk)
                    sys.stdout.flush()
            else:
                sys.stdout.write(client.logs(job_id, tail=tail))
        except ApiError as exc:
            raise _fail(exc) from exc


@app.command()
def cancel(
    job_id: str,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    force: Annotated[bool, typer.Option(help="SIGKILL now instead of a graceful stop")] = False,
) -> None:
    """Cancel a job (its driver gets SIGTERM and marks its MLflow runs KILLED)."""
    with _client(server, token) as client:
        try:
            answer = client.cancel(job_id, force=force)
        except ApiError as exc:
            raise _fail(exc) from exc
    console.print(f"job {job_id}: {state(answer['state'])}")


@app.command()
def rules() -> None:
    """List every rule with its paper and its parameters (defaults, types), read from the
    catalogue the spec validates against."""
    console.print(rules_table())


@app.command()
def report(
    job_id: str,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="ask this control plane; default: read the MLflow store directly",
            envvar="BIOPROP_SERVER",
        ),
    ] = None,
    token: TokenOpt = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow store to read without --server (default MLFLOW_TRACKING_URI, else "
            "./bioprop-runs/mlflow.db, as bioprop run)"
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="write the page here (default ./report-JOB_ID.html)")
    ] = None,
    open_: Annotated[
        bool, typer.Option("--open/--no-open", help="open it in a browser when there is a display")
    ] = True,
) -> None:
    """Write a job's comparison report (self-contained HTML: sortable table, curves, angle
    against depth), open it when a browser can show it, and print its path."""
    if server:
        with _client(server, token) as client:
            try:
                page = client.report(job_id)
            except ApiError as exc:
                raise _fail(exc) from exc
    else:
        from trainers.summary import job_report

        page = job_report(job_id, tracking_uri)
        if page is None:
            raise _fail(LookupError(f"no MLflow runs of job {job_id!r}"))
    path = (out or Path(f"report-{job_id}.html")).resolve()
    path.write_text(page, encoding="utf-8")
    console.print(str(path), highlight=False, soft_wrap=True)
    if open_ and _has_display():
        import webbrowser

        webbrowser.open(path.as_uri())


def _has_display() -> bool:
    """A browser window can open here (macOS, Windows, or an X11/Wayland session); never a
    terminal browser taking over the shell."""
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


app.command()(run)
app.command()(demo)
app.command("preflight")(preflight_cmd)
for _name, _command in BENCHMARKS.items():
    bench_app.command(_name)(_command)


@bench_app.command("service")
def bench_service_cmd(
    server: Annotated[
        str | None, typer.Option(help="benchmark this running service instead of a fresh one")
    ] = None,
    clients: Annotated[int, typer.Option(help="concurrent clients")] = 50,
    submissions: Annotated[int, typer.Option(help="submissions per client")] = 10,
    status_seconds: Annotated[float, typer.Option(help="duration of the status phase")] = 5.0,
    access_log: Annotated[bool, typer.Option(help="fresh service logs every request")] = True,
    driver: Annotated[
        str,
        typer.Option(
            help="fresh service's drivers: 'queue' (the first job keeps running, the rest "
            "wait PENDING) or 'churn' (every job exits at once)"
        ),
    ] = "queue",
) -> None:
    """Submission latency (p50/p99) with concurrent clients, and status requests per second."""
    from service.bench import bench_service

    result = bench_service(
        server=server,
        clients=clients,
        submissions=submissions,
        status_seconds=status_seconds,
        token=os.environ.get("BIOPROP_TOKEN"),
        access_log=access_log,
        driver=driver,
    )
    console.print(measures_table("control plane", result))


@bench_app.command("first-step")
def bench_first_step_cmd(
    rounds: Annotated[int, typer.Option(help="rounds per mode (alternating)")] = 3,
    mode: Annotated[
        list[str] | None,
        typer.Option(help="ray-job | local | local-own-ray (repeatable; default the first two)"),
    ] = None,
) -> None:
    """Seconds from submission to the first training step: Ray Jobs driver vs local driver."""
    from service.bench_first_step import MODES, bench_first_step

    modes = tuple(mode or MODES[:2])
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise typer.BadParameter(f"unknown mode {unknown[0]!r}; modes: {', '.join(MODES)}")
    console.print_json(data=bench_first_step(rounds=rounds, modes=modes))


if __name__ == "__main__":  # pragma: no cover
    app()
