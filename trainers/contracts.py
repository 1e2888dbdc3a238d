"""The typed contract between a job's driver (``python -m trainers.launch``) and the control
plane: the job-id pattern, the job and run states, the result the driver writes and the
marker that carries it through a Ray job's log, and the MLflow tag names both sides read.

Torch-free and MLflow-free, so the service imports it at start-up. The driver writes a
:class:`JobResult` (as JSON: ``--result PATH``, or one ``RESULT_MARKER`` line on stdout);
the service and the client read it back with :meth:`JobResult.parse` and decide success
with :meth:`JobResult.succeeded`, never by comparing free strings.
"""

from __future__ import annotations

import enum
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "FINAL_STATES",
    "JOB_ID",
    "JobResult",
    "JobState",
    "RESULT_MARKER",
    "RunStatus",
    "SettingResult",
    "TAG_BOOKKEEPING",
    "TAG_CHECKPOINT",
    "TAG_ERROR",
    "TAG_JOB",
    "TAG_LAYERS",
    "TAG_NOTE",
    "TAG_ROLE",
    "TAG_RULE",
    "TAG_SETTING",
    "TAG_STOPPED",
    "TAG_STOPPED_AT",
    "TAG_TRIAL",
    "TAG_USER",
    "best_tag",
]

#: A job id: the service's ids and ``bioprop run --job-id``. No ``.``, so no id names a
#: parent folder, and at most 64 characters, so it fits Ray's and MLflow's names.
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

#: Prefix of the one stdout line of a Ray-job driver that carries its :class:`JobResult`.
RESULT_MARKER = "BIOPROP_RESULT "


class JobState(str, enum.Enum):
    """A job's state in the service's store. ``PENDING -> RUNNING -> SUCCEEDED | FAILED``,
    ``PENDING -> CANCELLED``, ``RUNNING -> CANCELLING -> CANCELLED``."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


FINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class RunStatus(str, enum.Enum):
    """An MLflow run's status (``mlflow.entities.RunStatus`` names), as the driver reports
    each setting and the job."""

    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


# MLflow tags bioprop writes and reads (parent and child runs)
TAG_JOB = "bioprop.job_id"
TAG_ROLE = "bioprop.role"  # "parent" | "child"
TAG_RULE = "bioprop.rule"
TAG_SETTING = "bioprop.setting"
TAG_LAYERS = "bioprop.layers"
TAG_TRIAL = "bioprop.trial_id"
TAG_STOPPED = "bioprop.stopped_early"
TAG_STOPPED_AT = "bioprop.stopped_at_epoch"
TAG_CHECKPOINT = "bioprop.checkpoint"
TAG_ERROR = "bioprop.error"
TAG_BOOKKEEPING = "bioprop.bookkeeping_error"
TAG_NOTE = "mlflow.note.content"
TAG_USER = "mlflow.user"


def best_tag(rule: str, field: str) -> str:
    """The parent run's tag naming the best setting of ``rule``: ``bioprop.best.<rule>.<field>``."""
    return f"bioprop.best.{rule}.{field}"


class _Open(BaseModel):
    """Typed where the service reads; other keys the driver adds ride along."""

    model_config = ConfigDict(extra="allow")


class SettingResult(_Open):
    """One setting (trial) of a job: its rule, label, MLflow child run and final status."""

    rule: str | None = None
    setting: str | None = None
    run_id: str | None = None
    status: RunStatus | None = None
    metrics: dict[str, Any] = {}
    error: str | None = None


class JobResult(_Open):
    """What the driver returns and writes: the job's status (``FINISHED`` when every setting
    finished), its MLflow parent run, one :class:`SettingResult` per setting, the best
    setting per rule (and, with swept seeds, each setting's metric over them), or ``error`` when
    the driver failed before or outside the settings."""

    status: RunStatus | None = None
    error: str | None = None
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    children: list[SettingResult] = []
    best: list[dict[str, Any]] = []
    over_seeds: list[dict[str, Any]] = []  # trainers.sweep.over_seeds: mean ± std per setting

    @classmethod
    def parse(cls, raw: Any) -> JobResult | None:
        """The result read from JSON data, or None when it is not one."""
        try:
            return cls.model_validate(raw)
        except ValidationError:
            return None

    def succeeded(self) -> bool:
        """No error, the job ``FINISHED`` (or no status, an older driver's result), and no
        setting FAILED or KILLED."""
        if self.error or self.status not in (None, RunStatus.FINISHED):
            return False
        return all(c.status not in (RunStatus.FAILED, RunStatus.KILLED) for c in self.children)

    def unfinished(self) -> list[SettingResult]:
        """The settings that did not finish, in order."""
        return [c for c in self.children if c.status is not RunStatus.FINISHED]
