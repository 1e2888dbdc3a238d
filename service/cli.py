"""The ``bioprop`` command line: serve, submit, status, logs, cancel, run, demo, data, bench."""

from __future__ import annotations

import logging
import os
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from service.client import FINAL_STATES, ApiError, Client

app = typer.Typer(
    name="bioprop",
    help="Train networks with credit-assignment rules that need no weight transport.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

console = Console()
err = Console(stderr=True)

DEFAULT_SERVER = "http://127.0.0.1:8000"
ServerOpt = Annotated[
    str, typer.Option("--server", help="control-plane URL", envvar="BIOPROP_SERVER")
]
STATE_STYLE = {
    "PENDING": "yellow",
    "RUNNING": "cyan",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLING": "magenta",
    "CANCELLED": "magenta",
}

try:  # another package's sub-app; the CLI must work before (or without) it
    from data_pipelines.cli import app as _data_app
except ImportError as _exc:  # pragma: no cover - depends on what is installed
    _data_app = None
    _data_error = str(_exc)

if _data_app is not None:
    app.add_typer(_data_app, name="data", help="Build and benchmark datasets.")
else:

    @app.command(
        "data", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )
    def data_unavailable() -> None:
        """Build and benchmark datasets (data_pipelines.cli is not available)."""
        err.print(f"[red]bioprop data is unavailable:[/] {_data_error}")
        raise typer.Exit(2)


def _client(server: str) -> Client:
    return Client(server, token=os.environ.get("BIOPROP_TOKEN"))


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/] {exc}")
    return typer.Exit(1)


def _state(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def _when(value: str | None) -> str:
    return value.replace("T", " ")[:19] if value else "-"


def pick(metrics: dict[str, Any], *names: str) -> float | None:
    """First metric present among ``names`` (the trainers' names first, then fallbacks)."""
    for name in names:
        if metrics.get(name) is not None:
            return metrics[name]
    return None


def _acc(metrics: dict[str, Any]) -> float | None:
    return pick(metrics, "val_acc", "val_accuracy", "accuracy", "acc")


def _angle(metrics: dict[str, Any]) -> float | None:
    return pick(metrics, "align_mean_angle", "mean_angle", "alignment.mean_angle")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _children(job: dict[str, Any]) -> list[dict[str, Any]]:
    progress = job.get("progress") or {}
    children = progress.get("children") or (job.get("result") or {}).get("children") or []
    return children


def _labels(spec: dict[str, Any] | None) -> list[str]:
    """The sweep-setting labels a spec will run (its rule names when it is a plain sweep)."""
    from trainers.spec import ExperimentSpec

    try:
        return [label for label, _ in ExperimentSpec.model_validate(spec or {}).settings()]
    except ValueError:
        return []


def progress_table(job: dict[str, Any]) -> Table:
    """Per-setting epoch / accuracy / alignment of a job, as a rich table."""
    epochs = (job.get("spec") or {}).get("schedule", {}).get("epochs")
    table = Table(title=f"job {job['id']} {job['name']}: {_state(job['state'])}")
    for column in ("setting", "status", "epoch", "val accuracy", "mean angle (deg)"):
        table.add_column(column)
    seen = set()
    for child in _children(job):
        metrics = child.get("metrics") or {}
        epoch = metrics.get("epoch")
        epoch_text = "-" if epoch is None else f"{int(epoch)}" + (f"/{epochs}" if epochs else "")
        label = child.get("setting") or child.get("rule")
        table.add_row(
            str(label),
            str(child.get("status", "-")),
            epoch_text,
            _fmt(_acc(metrics), ".3f"),
            _fmt(_angle(metrics), ".1f"),
        )
        seen.add(label)
    for label in _labels(job.get("spec")):
        if label not in seen:
            table.add_row(label, "waiting", "-", "-", "-")
    return table


# service ---------------------------------------------------------------------------------
@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    access_log: Annotated[bool, typer.Option(help="log every request")] = True,
) -> None:
    """Start the control plane (SQLite job store and local MLflow store unless configured)."""
    from service.server import serve as run_server
    from service.settings import Settings

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings()
    if not settings.API_TOKENS and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(
            f"[red]refusing to serve on {host} without BIOPROP_API_TOKENS[/]: "
            "an open API may only listen on 127.0.0.1"
        )
        raise typer.Exit(2)
    run_server(settings, host=host, port=port, access_log=access_log)


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="spec file (YAML or JSON)", exists=True)],
    server: ServerOpt = DEFAULT_SERVER,
    idempotency_key: Annotated[str | None, typer.Option(help="Idempotency-Key header")] = None,
    wait: Annotated[bool, typer.Option(help="wait for the job to finish")] = False,
) -> None:
    """Submit a spec to a running service; prints the job id."""
    with _client(server) as client:
        try:
            job = client.submit(spec, idempotency_key=idempotency_key)
        except (ApiError, OSError, ValueError) as exc:
            raise _fail(exc) from exc
        console.print(f"submitted job [bold]{job['id']}[/] ({job['name']}): {_state(job['state'])}")
        if wait:
            job = _watch(client, job["id"])
            raise typer.Exit(0 if job["state"] == "SUCCEEDED" else 1)


@app.command()
def status(
    job_id: Annotated[str | None, typer.Argument(help="job id; none lists jobs")] = None,
    server: ServerOpt = DEFAULT_SERVER,
    state: Annotated[list[str] | None, typer.Option(help="filter by state")] = None,
    name: Annotated[str | None, typer.Option(help="filter by spec name")] = None,
    limit: Annotated[int, typer.Option(help="page size")] = 20,
    offset: Annotated[int, typer.Option(help="page start")] = 0,
) -> None:
    """Show one job with its per-rule progress, or list jobs."""
    with _client(server) as client:
        try:
            if job_id:
                job = client.get(job_id)
                console.print(progress_table(job))
                console.print(
                    f"created {_when(job['created_at'])}  started {_when(job['started_at'])}  "
                    f"finished {_when(job['finished_at'])}  "
                    f"mlflow parent run {job.get('mlflow_parent_run_id') or '-'}"
                )
                if job.get("pending_reason"):
                    console.print(f"[yellow]pending:[/] {job['pending_reason']}")
                if job.get("error"):
                    console.print(f"[red]error:[/] {job['error']}")
                return
            page = client.list(state=state, name=name, limit=limit, offset=offset)
        except ApiError as exc:
            raise _fail(exc) from exc
    table = Table(title=f"jobs {offset + 1}-{offset + len(page['items'])} of {page['total']}")
    table.add_column("id", no_wrap=True, min_width=16)
    for column in ("name", "state", "rules", "created", "finished"):
        table.add_column(column)
    for job in page["items"]:
        rules = job["spec"].get("rule", {}).get("name")
        table.add_row(
            job["id"],
            job["name"],
            _state(job["state"]),
            ",".join(rules) if isinstance(rules, list) else str(rules),
            _when(job["created_at"]),
            _when(job["finished_at"]),
        )
    console.print(table)


@app.command()
def logs(
    job_id: str,
    server: ServerOpt = DEFAULT_SERVER,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="stream until the job ends")
    ] = False,
    tail: Annotated[int | None, typer.Option(help="last N lines")] = None,
) -> None:
    """Print a job's driver log."""
    with _client(server) as client:
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
    force: Annotated[bool, typer.Option(help="SIGKILL now instead of a graceful stop")] = False,
) -> None:
    """Cancel a job (its driver gets SIGTERM and marks its MLflow runs KILLED)."""
    with _client(server) as client:
        try:
            answer = client.cancel(job_id, force=force)
        except ApiError as exc:
            raise _fail(exc) from exc
    console.print(f"job {job_id}: {_state(answer['state'])}")


# in-process run ------------------------------------------------------------------------
@app.command()
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
) -> None:
    """Run one experiment or sweep in this process (local Ray unless an address is given)."""
    import uuid

    from trainers.launch import run_experiment
    from trainers.spec import load_spec

    logging.basicConfig(level=logging.WARNING)
    loaded = load_spec(spec)
    if workers is not None:
        loaded = loaded.model_copy(
            update={"scale": loaded.scale.model_copy(update={"workers": workers})}
        )
    if address:
        os.environ["RAY_ADDRESS"] = address
    job_id = job_id or uuid.uuid4().hex[:12]
    console.print(f"run [bold]{job_id}[/] (resume it with --job-id {job_id})")
    with _LocalProgress(loaded, job_id):
        result = run_experiment(loaded, job_id=job_id)
    console.print(results_table(result.get("children", []), title=f"{loaded.name}"))
    console.print(
        f"MLflow parent run {result.get('parent_run_id')} in {result.get('tracking_uri')}"
    )
    failed = [c for c in result.get("children", []) if c.get("status") != "FINISHED"]
    raise typer.Exit(1 if failed else 0)


class _LocalProgress:
    """A live per-rule table for an in-process run, polled from MLflow in a thread."""

    def __init__(self, spec: Any, job_id: str, poll: float = 2.0) -> None:
        import threading

        self.job = {"id": job_id, "name": spec.name, "state": "RUNNING"}
        self.job["spec"] = spec.model_dump(mode="json")
        self.uri, self.poll = spec.tracking.uri, poll
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        from rich.live import Live

        from trainers.tracking import job_summary

        with Live(progress_table(self.job), console=console, transient=True) as live:
            while not self.stop.wait(self.poll):
                try:
                    self.job["progress"] = job_summary(self.job["id"], self.uri)
                except Exception:  # the store may not exist yet; try again next tick
                    continue
                live.update(progress_table(self.job))

    def __enter__(self) -> _LocalProgress:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def results_table(children: list[dict[str, Any]], *, title: str) -> Table:
    table = Table(title=title)
    for column in ("setting", "status", "final accuracy", "mean alignment angle (deg)"):
        table.add_column(column)
    for child in children:
        metrics = child.get("metrics") or {}
        table.add_row(
            str(child.get("setting") or child.get("rule")),
            str(child.get("status", "-")),
            _fmt(_acc(metrics), ".3f"),
            _fmt(_angle(metrics), ".1f"),
        )
    return table


# demo ------------------------------------------------------------------------------------
def _watch(
    client: Client, job_id: str, *, poll: float = 2.0, transient: bool = False
) -> dict[str, Any]:
    from rich.live import Live

    job = client.get(job_id)
    with Live(
        progress_table(job), console=console, refresh_per_second=2, transient=transient
    ) as live:
        while job["state"] not in FINAL_STATES:
            time.sleep(poll)
            job = client.get(job_id)
            live.update(progress_table(job))
    return job


@app.command()
def demo(
    spec: Annotated[Path | None, typer.Option(help="spec to run instead of the demo sweep")] = None,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 1800,
) -> None:
    """Start the service, submit the bp/fa/ss sweep over HTTP, follow it, print the results."""
    from service.server import ServerThread
    from service.settings import Settings

    logging.basicConfig(level=logging.WARNING)
    for name in ("service", "mlflow", "alembic"):  # keep the live display clean
        logging.getLogger(name).setLevel(logging.ERROR)
    settings = Settings(RUN_DIR=Path.cwd() / "bioprop-runs")
    text = (
        spec.read_text() if spec else resources.files("service").joinpath("demo.yaml").read_text()
    )
    started = time.monotonic()
    with ServerThread(settings) as server:
        console.print(f"control plane on {server.url} (job store {settings.DB_URL})")
        with Client(server.url) as client:
            import yaml

            try:
                job = client.submit(yaml.safe_load(text))
            except ApiError as exc:
                raise _fail(exc) from exc
            console.print(f"submitted job [bold]{job['id']}[/] over HTTP")
            try:
                job = _watch(client, job["id"], transient=True)
            except KeyboardInterrupt:
                client.cancel(job["id"])
                err.print(f"cancelled job {job['id']}")
                raise typer.Exit(130) from None
            metrics = client.metrics(job["id"])
            tail = client.logs(job["id"], tail=40) if job["state"] != "SUCCEEDED" else ""
    elapsed = time.monotonic() - started
    children = metrics.get("children") or (job.get("result") or {}).get("children") or []
    console.print(results_table(children, title=f"{job['name']}: {_state(job['state'])}"))
    console.print(f"finished in {elapsed:.0f} s; MLflow parent run {metrics.get('parent_run_id')}")
    console.print(
        "open the MLflow UI: [bold]make mlflow-ui[/]  (mlflow ui --backend-store-uri "
        f"{settings.MLFLOW_URI} --port 5000), then http://127.0.0.1:5000"
    )
    if job["state"] != "SUCCEEDED":
        err.print(f"[red]job {job['state']}[/]: {job.get('error') or ''}")
        if tail:
            err.print(tail)
        raise typer.Exit(1)


# benchmarks ------------------------------------------------------------------------------
@bench_app.command("rules")
def bench_rules_cmd(
    models: Annotated[str, typer.Option(help="comma-separated models")] = "mlp,resnet18",
    rules: Annotated[str | None, typer.Option(help="comma-separated rules (default: all)")] = None,
    steps: Annotated[int, typer.Option(help="timed steps per rule")] = 20,
    batch_size: Annotated[int, typer.Option(help="batch size")] = 32,
    image_size: Annotated[int, typer.Option(help="image side, pixels")] = 64,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if any)")] = None,
) -> None:
    """Median step time of each rule and its ratio to BP (trainers.bench.bench_rules)."""
    try:
        from trainers.bench import bench_rules, format_table
    except ImportError as exc:
        raise _fail(RuntimeError(f"trainers.bench is unavailable: {exc}")) from exc
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = bench_rules(
        [m for m in models.split(",") if m],
        rules=[r for r in rules.split(",") if r] if rules else None,
        steps=steps,
        batch_size=batch_size,
        image_size=image_size,
        device=device,
    )
    console.print(format_table(rows), markup=False, highlight=False)


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
    table = Table(title="control plane")
    table.add_column("measure")
    table.add_column("value")
    for key, value in result.items():
        table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    console.print(table)


@bench_app.command("train")
def bench_train_cmd(
    model: Annotated[str, typer.Option(help="model name")] = "resnet18",
    image_size: Annotated[int, typer.Option(help="input side, pixels")] = 64,
    workers: Annotated[int, typer.Option(help="compared against 1 worker")] = 2,
    batch_size: Annotated[int, typer.Option(help="global batch")] = 128,
    epochs: Annotated[int, typer.Option(help="epochs per run (the first is warm-up)")] = 3,
    rounds: Annotated[int, typer.Option(help="alternating rounds of both configs")] = 3,
    train_per_class: Annotated[
        int, typer.Option(help="synthetic train images per class (4 classes)")
    ] = 256,
    ceiling: Annotated[
        bool, typer.Option(help="also measure N independent processes (the machine's best case)")
    ] = True,
    sweep: Annotated[
        bool, typer.Option(help="also time an epoch of every rule (digits MLP)")
    ] = True,
) -> None:
    """Training samples/s with 1 vs N Ray Train workers; epoch time per rule of a sweep."""
    from trainers.throughput import bench_ceiling, bench_sweep_epochs, bench_workers

    logging.basicConfig(level=logging.WARNING)
    result = bench_workers(
        model=model,
        image_size=image_size,
        workers=workers,
        batch_size=batch_size,
        epochs=epochs,
        rounds=rounds,
        train_per_class=train_per_class,
    )
    if ceiling:
        result.update(
            bench_ceiling(
                model=model,
                image_size=image_size,
                workers=workers,
                batch_size=batch_size,
                rounds=rounds,
            )
        )
        # how much of what the machine allows the DDP path gets
        result["ddp_efficiency"] = result["speedup"] / result["ceiling"]
    table = Table(title=f"{model} at {image_size}px, global batch {batch_size}")
    table.add_column("measure")
    table.add_column("value")
    for key, value in result.items():
        table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    console.print(table)
    if sweep:
        rows = bench_sweep_epochs()
        table = Table(title="digits MLP sweep, median epoch time")
        for column in ("rule", "status", "epoch time (s)", "val accuracy"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row["rule"], row["status"], f"{row['epoch_time_s']:.3f}", f"{row['val_acc']:.3f}"
            )
        console.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
