"""The one per-worker training loop, on every rank of a Ray Train run or, for a 1-worker
setting, in its Tune trial's process (:mod:`trainers.in_trial`), for every task.

Shaped like Ray Train's own examples: prepare the model (DDP), iterate this rank's shard,
and report to the session (:mod:`trainers.session`: ``ray.train.report`` on a Train run)
from every rank once per epoch, with a checkpoint from rank 0 on checkpoint epochs
(:func:`checkpoint_due`: ``spec.checkpoint``). What differs between
tasks is a small :class:`~trainers.tasks.base.Task` object looked up
by ``spec.task`` in ``trainers.tasks.TASKS``: it builds the converted model, takes one
batch to a loss and its named per-sample sums, evaluates, and picks and scores the
gradient-alignment probe batch. Everything else is here, once: restore, the optimizer
step (gradient clipping, ``rules.after_step``), the alignment cadence, the epoch metrics
(the task's sums all-reduced over ranks and divided by the sample count, ``lr``,
``samples_per_s``, ``epoch_time_s``), and :func:`close_epoch`.

Checkpoint dict (torchvision references' layout): ``model`` (includes the rule's fixed and
plastic feedback, which are buffers/parameters), ``optimizer``, ``lr_scheduler``, ``epoch``
(the last finished one), ``rng`` (torch/numpy/python states of every rank) and ``spec``.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import torch
import torch.distributed as dist
from torch import nn

from trainers import metrics, notices, rules
from trainers.optim import build_optimizer
from trainers.session import RayTrainSession, Session
from trainers.spec import ExperimentSpec
from trainers.tasks import get_task
from trainers.tasks.base import Task, WorkerEnv, all_reduce_sum
from trainers.tracking import log_epoch, log_metrics, log_metrics_of

__all__ = [
    "CHECKPOINT_FILE",
    "CheckpointClock",
    "Task",
    "WorkerEnv",
    "all_reduce_sum",
    "checkpoint_due",
    "close_epoch",
    "restore_or_start",
    "retrained_epochs",
    "run_worker_loop",
    "train_loop_per_worker",
    "worker_env",
]

CHECKPOINT_FILE = "checkpoint.pt"
TAG_RETRAINED = "bioprop.retrained_epochs"


def worker_env(config: dict[str, Any], session: Session) -> WorkerEnv:
    """The :class:`WorkerEnv` of this worker; ``config``: ``spec``, ``run_id``, ``uri``."""
    spec = ExperimentSpec.model_validate(config["spec"])
    rank, world = session.rank_world()
    return WorkerEnv(
        spec=spec,
        run_id=config["run_id"],
        uri=config["uri"],
        rank=rank,
        world=world,
        device=session.device(spec.scale.gpu),
    )


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: :func:`run_worker_loop` as a worker of a Train run."""
    run_worker_loop(config, RayTrainSession())


def run_worker_loop(config: dict[str, Any], session: Session) -> None:
    """Train one setting on this worker. ``config``: ``spec`` (resolved, data prepared),
    ``run_id``, ``uri`` and ``setting`` (the label this worker's warnings are shown with);
    ``session``: what runs the loop (:mod:`trainers.session`)."""
    env = worker_env(config, session)
    notices.install(config.get("setting") or env.spec.rule.name)
    if env.spec.batch_size % env.world:
        per = env.spec.batch_size // env.world
        warnings.warn(
            f"batch_size {env.spec.batch_size} is not a multiple of scale.workers {env.world}: "
            f"each worker takes {per}, {per * env.world} samples per step",
            stacklevel=1,
        )
    spec, run_id, uri, rank, world, device = env
    task = get_task(spec.task)
    val_loader = env.loader("val", spec.seed)
    model = task.build(env, val_loader)
    optimizer, scheduler, start_epoch = restore_or_start(
        model, spec, rank, world, run_id, uri, session.get_checkpoint()
    )
    # epochs this run logged past its checkpoint before a failure: trained again, not logged
    logged = retrained_epochs(uri, run_id, start_epoch) if rank == 0 else 0
    model = session.prepare_model(model)
    if task.channels_last and env.use_amp:
        model = model.to(memory_format=torch.channels_last)

    probe = task.probe(val_loader, env) if rank == 0 else None
    monitor = _system_metrics(uri, run_id) if rank == 0 else None
    clock = CheckpointClock()
    step: int | None = None  # global optimizer step, known once the first loader is built
    try:
        for epoch in range(start_epoch, spec.schedule.epochs):
            model.train()
            t0 = time.perf_counter()
            totals = torch.zeros(len(task.sums) + 1, dtype=torch.float64, device=device)
            # a loader per epoch, seeded by the epoch: a resumed run sees the same data order
            train_loader = env.loader("train", spec.seed * 100_003 + epoch)
            step = epoch * len(train_loader) if step is None else step
            for batch in train_loader:
                loss, sums, n = task.step(model, batch, env)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if spec.optim.clip_grad_norm:  # after DDP's all-reduce: the same on every rank
                    nn.utils.clip_grad_norm_(model.parameters(), spec.optim.clip_grad_norm)
                optimizer.step()
                rules.after_step(model)
                with torch.no_grad():
                    totals[:-1] += torch.stack([sums[name] for name in task.sums])
                    totals[-1] += n
                step += 1
                every = spec.tracking.alignment_every
                if probe is not None and every and step % every == 0 and epoch >= logged:
                    found = task.probe_alignment(model, probe, env)
                    cap = spec.tracking.layer_metrics_max_layers
                    log_metrics_of(uri, run_id, found, step=step, max_layers=cap)
            elapsed = time.perf_counter() - t0
            *sums_all, count = all_reduce_sum(totals.tolist(), device)
            epoch_metrics = {"epoch": epoch + 1}
            for name, total in zip(task.sums, sums_all, strict=True):
                epoch_metrics[name] = total / max(count, 1.0)
            epoch_metrics["lr"] = optimizer.param_groups[0]["lr"]
            epoch_metrics["samples_per_s"] = count / max(elapsed, 1e-9)
            epoch_metrics["epoch_time_s"] = elapsed
            scheduler.step()
            epoch_metrics.update(task.evaluate(model, val_loader, env))
            probe_alignment = (
                (lambda: task.probe_alignment(model, probe, env)) if probe is not None else None
            )
            close_epoch(
                env, epoch, epoch_metrics, model, optimizer, scheduler, probe_alignment,
                log_to_mlflow=epoch >= logged, clock=clock, session=session,
            )  # fmt: skip
    finally:
        if monitor is not None:
            monitor.finish()


def restore_or_start(
    model: nn.Module,
    spec: ExperimentSpec,
    rank: int,
    world: int,
    run_id: str,
    uri: str,
    checkpoint: Any = None,
):
    """Optimizer and LR scheduler for ``model``, restored with the model, RNG and epoch from
    ``checkpoint`` (the session's last, a ``ray.train.Checkpoint``) when there is one.
    Returns ``(optimizer, scheduler, start_epoch)``. Every rank must call it (it runs a
    collective)."""
    optimizer = build_optimizer(rules.param_groups(model), spec.optim)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=spec.schedule.step_every, gamma=spec.schedule.gamma
    )
    start_epoch = 0
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            state = torch.load(Path(ckpt_dir) / CHECKPOINT_FILE, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["lr_scheduler"])
        _set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
        start_epoch = state["epoch"] + 1
        if rank == 0:
            log_metrics(uri, run_id, {"resumed_from_epoch": start_epoch}, step=start_epoch)
    else:
        torch.manual_seed(spec.seed + rank)
    nodes = _count_nodes(world)  # a collective: every rank calls it
    if rank == 0 and start_epoch == 0:
        log_metrics(uri, run_id, {"ddp_nodes": nodes}, step=0)
    return optimizer, scheduler, start_epoch


def retrained_epochs(uri: str, run_id: str, start_epoch: int) -> int:
    """The last epoch the MLflow run has logged, when a restart from a checkpoint of
    ``start_epoch`` epochs trains it again (else ``start_epoch``). Those epochs keep the
    points first logged (training resumes with the checkpoint's RNG states and the same
    data order, so the second pass repeats the first) and are listed in the run's tag
    ``bioprop.retrained_epochs``: MLflow's history is append-only, and logging them again
    would put two points on one step."""
    if start_epoch == 0:
        return 0
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    logged = int(run.data.metrics.get("epoch", 0))
    if logged <= start_epoch:
        return start_epoch
    again = {int(e) for e in run.data.tags.get(TAG_RETRAINED, "").split(",") if e}
    again.update(range(start_epoch + 1, logged + 1))
    client.set_tag(run_id, TAG_RETRAINED, ",".join(map(str, sorted(again))))
    return logged


def close_epoch(
    env: WorkerEnv,
    epoch: int,
    epoch_metrics: dict[str, float],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    probe_alignment: Callable[[], dict[str, float]] | None,
    *,
    log_to_mlflow: bool = True,
    clock: CheckpointClock | None = None,
    session: Session,
) -> None:
    """End an epoch whose train and val metrics are in ``epoch_metrics``: add per-layer
    weight alignment (and, unless ``tracking.alignment_every`` logs it per step, the probe's
    gradient alignment), report to the session with the checkpoint, and log everything to
    MLflow on rank 0 (unless ``log_to_mlflow`` is false: an epoch the run logged before,
    trained again after a restart); the log first where the session says so
    (``log_before_report``: a scheduler's stop may end the process inside the report). The
    report holds only the epoch metrics and the mean alignment angle. ``clock``: when the
    last checkpoint was saved (``checkpoint.min_interval_s``); without one, every
    ``checkpoint.every_epochs`` epochs. ``session``: where the report goes."""
    summary = dict(epoch_metrics)
    align = metrics.alignment(rules.unwrap(model))
    epoch_metrics.update({f"align_{k}": v for k, v in align.items() if np.isfinite(v)})
    if probe_alignment is not None and not env.spec.tracking.alignment_every:
        epoch_metrics.update(probe_alignment())
    summary["align_mean_angle"] = epoch_metrics.get("align_mean_angle", float("nan"))
    save = checkpoint_due(env, epoch, clock)
    log = env.rank == 0 and log_to_mlflow
    if log and session.log_before_report:
        _log(env, epoch, epoch_metrics)
    _report(
        session, env.spec, epoch, summary, model, optimizer, scheduler,
        env.rank, env.world, save,
    )  # fmt: skip
    if log and not session.log_before_report:
        _log(env, epoch, epoch_metrics)
    if save and clock is not None:
        clock.saved()


def _log(env: WorkerEnv, epoch: int, epoch_metrics: dict[str, float]) -> None:
    tracking = env.spec.tracking
    log_epoch(
        env.uri,
        env.run_id,
        epoch_metrics,
        step=epoch + 1,
        weight_stats=tracking.weight_stats,
        max_layers=tracking.layer_metrics_max_layers,
        final=epoch + 1 == env.spec.schedule.epochs,
    )


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _system_metrics(uri: str, run_id: str):
    """MLflow's system-metrics monitor (CPU, memory, GPU) on the child run, from rank 0: a
    sample every 10 s, and at the end the samples not yet logged (MLflow's own monitor drops
    them, so a run shorter than 10 s had no ``system/*`` metric at all)."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        class Monitor(SystemMetricsMonitor):
            def finish(self) -> None:
                running = self._process is not None
                super().finish()
                try:
                    if running and any(m.metrics for m in self.monitors):
                        self.publish_metrics(self.aggregate_metrics())
                        self.mlflow_logger.flush()
                except Exception:  # the run may be closed already
                    pass

        monitor = Monitor(run_id, sampling_interval=10, tracking_uri=uri)
        monitor.start()
        return monitor
    except Exception:  # system metrics are a convenience; never fail a run over them
        return None


def _count_nodes(world: int) -> int:
    """How many distinct Ray nodes this worker group spans (1 for a process outside Ray: a
    driver training its one setting itself)."""
    if not ray.is_initialized():
        return 1
    node = ray.get_runtime_context().get_node_id()
    nodes: list[Any] = [None] * world
    if dist.is_available() and dist.is_initialized():
        dist.all_gather_object(nodes, node)
    else:
        nodes = [node]
    return len(set(nodes))


def _gather_rng(world: int) -> list[dict[str, Any]]:
    """Every rank's RNG state, so a resumed rank continues its own random stream."""
    states: list[Any] = [None] * world
    if dist.is_available() and dist.is_initialized():
        dist.all_gather_object(states, _rng_state())
    else:
        states = [_rng_state()]
    return states


class CheckpointClock:
    """When this worker's setting last saved a checkpoint (or started), monotonic seconds."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def saved(self) -> None:
        self.last = time.monotonic()

    def since(self) -> float:
        return time.monotonic() - self.last


def checkpoint_due(env: WorkerEnv, epoch: int, clock: CheckpointClock | None) -> bool:
    """Whether epoch ``epoch`` (0-based) ends with a checkpoint (``spec.checkpoint``): the
    last epoch always; else a multiple of ``every_epochs`` at least ``min_interval_s`` after
    the previous checkpoint. Ranks' clocks differ, so rank 0's decides for every rank (a
    collective when it depends on time: every rank calls it)."""
    spec = env.spec
    if epoch + 1 == spec.schedule.epochs:
        return True
    if (epoch + 1) % spec.checkpoint.every_epochs:
        return False
    interval = spec.checkpoint.min_interval_s
    if clock is None or interval <= 0:
        return True
    due = env.rank == 0 and clock.since() >= interval
    return all_reduce_sum([1.0 if due else 0.0], env.device)[0] > 0


def _report(
    session, spec, epoch, epoch_metrics, model, optimizer, scheduler, rank, world, save
) -> None:
    rng = _gather_rng(world) if save else []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if save and rank == 0:
            state = {
                "model": rules.unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "rng": rng,
                "spec": spec.model_dump(mode="json"),
            }
            torch.save(state, os.path.join(tmp, CHECKPOINT_FILE))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        session.report(epoch_metrics, checkpoint)
