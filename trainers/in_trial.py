"""A 1-worker setting trained inside its Tune trial's process, without a Ray Train run.

A Ray Train run starts, per setting, a controller, a placement-group cleaner, a
synchronization actor, the worker and a dataset manager, one process after another: on a
small setting that chain is most of the setting's cost (``docs/benchmarks.md``, issue 24).
A setting of one worker needs none of it: no process group, no second process.
:func:`fit_in_trial` runs the same worker loop (:func:`trainers.worker.train_loop_per_worker`,
unchanged) in the trial's process against the hook Ray Train's own local mode
(``ScalingConfig(num_workers=0)``) uses, ``TrainFnUtils``: ``ray.train.get_context``,
``get_checkpoint``, ``report`` and ``ray.train.torch.get_device`` / ``prepare_model`` answer
as on a 1-worker Train run (rank 0, world 1, no DDP wrapper). Ray's local mode itself keeps a
reported checkpoint only in memory and reports to no Tune session; :class:`TrialFnUtils`
adds what a setting needs:

- **checkpoints persisted** to ``<storage_path>/<setting's Train-run name>/checkpoint_<epoch>``
  (the folder a Ray Train run of the setting would use; a local folder or a ``pyarrow.fs``
  URI such as ``s3://``), ``checkpoint.keep`` of them kept. A folder counts once its marker
  file is written after ``checkpoint.pt``: a crash mid-copy leaves a folder that is ignored.
- **resume**: the newest complete checkpoint is what ``get_checkpoint`` returns, so starting
  the job again continues exactly, as on a Train run.
- **Tune reports**: each epoch's metrics go to ``ray.tune.report`` with the persisted
  checkpoint's path under ``checkpoint_path`` (what Ray's ``TuneReportCallback`` forwards for
  a Train run: ASHA and the sweep's bookkeeping read the same result).
- **retries**: an exception in the loop restarts it from the newest checkpoint, up to
  ``max_failures`` times (``FailureConfig(max_failures)`` of a Train run). A trial process
  that dies (node lost, killed) ends the setting FAILED; the job's next start resumes it.

The trial then holds the worker's resources (``scale.cpus_per_worker``, a GPU with
``scale.gpu``) instead of none: :func:`trial_resources`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from trainers.spec import ExperimentSpec

__all__ = [
    "COMPLETE",
    "PREFIX",
    "CheckpointStore",
    "TrialSession",
    "fit_in_trial",
    "runs_in_trial",
    "trial_resources",
]

log = logging.getLogger("bioprop.in_trial")

PREFIX = "checkpoint_"
COMPLETE = ".complete"  # written after checkpoint.pt: the folder holds a whole checkpoint


def runs_in_trial(spec: ExperimentSpec) -> bool:
    """Whether a setting of ``spec`` trains in its Tune trial's process (one worker)."""
    return spec.scale.workers == 1


def trial_resources(spec: ExperimentSpec) -> dict[str, float]:
    """Tune trial resources of a setting that trains in its trial: its one worker's."""
    return {"cpu": spec.scale.cpus_per_worker, "gpu": 1 if spec.scale.gpu else 0}


@dataclass(frozen=True)
class CheckpointStore:
    """A setting's checkpoint folders on a ``pyarrow.fs`` filesystem (``root``: the setting's
    folder on it, without the scheme, as Ray Train names checkpoint paths)."""

    fs: Any
    root: str
    keep: int

    @classmethod
    def open(cls, storage: str, name: str, keep: int) -> CheckpointStore:
        import pyarrow.fs

        from trainers.storage import is_uri

        if is_uri(storage):
            fs, base = pyarrow.fs.FileSystem.from_uri(storage)
        else:
            fs, base = pyarrow.fs.LocalFileSystem(), os.path.abspath(storage)
        root = f"{base.rstrip('/')}/{name}"
        fs.create_dir(root, recursive=True)
        return cls(fs, root, keep)

    def complete(self) -> list[tuple[int, str]]:
        """``(epoch, path)`` of every complete checkpoint, oldest first."""
        import pyarrow.fs

        found = []
        selector = pyarrow.fs.FileSelector(self.root, allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            name = info.base_name
            if info.type != pyarrow.fs.FileType.Directory or not name.startswith(PREFIX):
                continue
            marker = self.fs.get_file_info(f"{info.path}/{COMPLETE}")
            if marker.type == pyarrow.fs.FileType.File and name[len(PREFIX) :].isdigit():
                found.append((int(name[len(PREFIX) :]), info.path))
        return sorted(found)

    def latest(self):
        """The newest complete checkpoint as a ``ray.train.Checkpoint``, or None."""
        from ray.train import Checkpoint

        found = self.complete()
        return Checkpoint(found[-1][1], filesystem=self.fs) if found else None

    def save(self, folder: str, epoch: int):
        """Copy a local checkpoint folder in as epoch ``epoch``'s (0-based) and drop the
        oldest beyond ``keep``; returns the persisted ``ray.train.Checkpoint``."""
        import pyarrow.fs
        from ray.train import Checkpoint

        path = f"{self.root}/{PREFIX}{epoch:06d}"
        if self.fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
            self.fs.delete_dir(path)  # a half-written one, or one trained again
        self.fs.create_dir(path, recursive=True)
        pyarrow.fs.copy_files(
            folder, path, source_filesystem=pyarrow.fs.LocalFileSystem(),
            destination_filesystem=self.fs,
        )  # fmt: skip
        with self.fs.open_output_stream(f"{path}/{COMPLETE}") as out:
            out.write(b"")
        for _, old in self.complete()[: -self.keep]:
            self.fs.delete_dir(old)
        return Checkpoint(path, filesystem=self.fs)


class TrialSession:
    """The worker loop's session in a Tune trial's process: rank 0 of 1, no DDP wrapper,
    checkpoints persisted to ``store``, each epoch's result reported to Tune. Tune's
    scheduler may stop the trial by ending this process inside the report, so an epoch is
    logged to MLflow before it."""

    log_before_report = True

    def __init__(self, store: CheckpointStore, to_tune: bool = True) -> None:
        self.store = store
        self.to_tune = to_tune
        self.checkpoint = store.latest()
        self._device = None

    def rank_world(self) -> tuple[int, int]:
        return 0, 1

    def device(self, gpu: bool):
        import torch

        # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPU: it is device 0 here
        self._device = torch.device("cuda", 0) if gpu else torch.device("cpu")
        return self._device

    def prepare_model(self, model):
        return model.to(self._device)  # one worker: no DDP wrapper

    def get_checkpoint(self):
        return self.checkpoint

    def report(self, metrics: dict[str, float], checkpoint) -> None:
        result = dict(metrics)
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:  # metrics' epoch counts from 1
                self.checkpoint = self.store.save(folder, int(metrics["epoch"]) - 1)
            result["checkpoint_path"] = self.checkpoint.path  # as TuneReportCallback puts it
        if self.to_tune:
            from ray import tune

            tune.report(result)


def fit_in_trial(config: dict[str, Any], spec: ExperimentSpec, name: str, *, to_tune=True):
    """Train one setting in this process: ``config`` is the worker loop's (``spec``,
    ``run_id``, ``uri``, ``setting``), ``name`` the setting's Train-run name (its checkpoint
    folder); ``to_tune``: report each epoch to this process's Tune trial (false: a driver
    training its one setting without Ray). Returns the newest persisted checkpoint (a
    ``ray.train.Checkpoint``) or None. Raises the loop's last exception once
    ``spec.max_failures`` restarts are spent (a stop request, a ``BaseException``, at once)."""
    import torch

    from trainers.trainer import job_storage
    from trainers.worker import run_worker_loop

    # the worker's share of the CPU, as Ray gives a trial (OMP_NUM_THREADS), also in a driver
    torch.set_num_threads(spec.scale.cpus_per_worker)
    store = CheckpointStore.open(job_storage(spec), name, spec.checkpoint.keep)
    failures = 0
    while True:
        session = TrialSession(store, to_tune)
        try:
            run_worker_loop(config, session)
            return session.get_checkpoint()
        except Exception as exc:
            failures += 1
            if failures > spec.max_failures:
                raise
            log.warning(
                "setting %s failed (%r): restart %d of %d from its last checkpoint",
                name, exc, failures, spec.max_failures,
            )  # fmt: skip
