"""One setting's Ray Train ``TorchTrainer``: the worker loop, DDP backend, scaling, storage,
failure and checkpoint policy of a resolved spec. The sweep (:mod:`trainers.sweep`) builds
one per trial; the driver (:mod:`trainers.launch`) resolves where checkpoints go. Ray is
imported when a trainer is built, so importing this module stays light.
"""

from __future__ import annotations

import re

from trainers.spec import ExperimentSpec
from trainers.storage import resolve_storage

__all__ = ["build_trainer", "job_storage", "train_run_name", "worker_config"]


def job_storage(spec: ExperimentSpec) -> str:
    """Where this spec's checkpoints go: a URI as it is; a local folder, created."""
    return resolve_storage(spec.storage_path)


def train_run_name(spec: ExperimentSpec, setting: str, job_id: str) -> str:
    """Stable per job and setting, so restarting the same job resumes its Ray Train run (or,
    for a setting trained in its trial, :mod:`trainers.in_trial`, its checkpoint folder)."""
    raw = f"{spec.name}-{setting}-{job_id}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)


def worker_config(spec: ExperimentSpec, *, run_id: str, uri: str, label: str) -> dict:
    """The worker loop's ``config`` (:func:`trainers.worker.train_loop_per_worker`)."""
    return {"spec": spec.model_dump(mode="json"), "run_id": run_id, "uri": uri, "setting": label}


def build_trainer(
    spec: ExperimentSpec,
    *,
    run_id: str,
    uri: str,
    job_id: str,
    setting: str | None = None,
    callbacks: list | None = None,
    label: str | None = None,
):
    """A ``TorchTrainer`` for one resolved, data-prepared spec (``callbacks``: Ray Train
    ``RunConfig`` callbacks, e.g. Tune's ``TuneReportCallback`` inside a Tune trial;
    ``label``: the setting's label, which its workers' warnings are shown with)."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from trainers.worker import train_loop_per_worker
    from trainers.worker_group import ReleaseOnFailedStart, failure_config

    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=worker_config(
            spec, run_id=run_id, uri=uri, label=label or setting or spec.rule.name
        ),
        torch_config=TorchConfig(backend="nccl" if spec.scale.gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=spec.scale.workers,
            use_gpu=spec.scale.gpu,
            resources_per_worker={"CPU": spec.scale.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=train_run_name(spec, setting or spec.rule.name, job_id),
            storage_path=job_storage(spec),
            failure_config=failure_config(spec),
            checkpoint_config=CheckpointConfig(num_to_keep=spec.checkpoint.keep),
            callbacks=[*(callbacks or []), ReleaseOnFailedStart()],
        ),
    )
