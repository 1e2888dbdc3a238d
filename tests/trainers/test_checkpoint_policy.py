"""When a setting saves a checkpoint (``spec.checkpoint``, :func:`trainers.worker.checkpoint_due`):
every ``every_epochs`` epochs, not sooner than ``min_interval_s`` after the previous one, and
always after the last epoch. One rank, no Ray (the all-reduce of a group of one is the value)."""

from __future__ import annotations

import torch
from tiny_specs import tiny_spec

from trainers.spec import ExperimentSpec
from trainers.worker import CheckpointClock, WorkerEnv, checkpoint_due


def _env(**checkpoint) -> WorkerEnv:
    spec = ExperimentSpec.model_validate(tiny_spec(schedule={"epochs": 6}, checkpoint=checkpoint))
    return WorkerEnv(spec, "run", "uri", 0, 1, torch.device("cpu"))


def _saved(env: WorkerEnv, clock: CheckpointClock | None, seconds_per_epoch: float) -> list[int]:
    """The epochs (1-based) that save, epochs taking ``seconds_per_epoch`` each."""
    saved = []
    for epoch in range(env.spec.schedule.epochs):
        if clock is not None:
            clock.last -= seconds_per_epoch  # the epoch's time passes
        if checkpoint_due(env, epoch, clock):
            saved.append(epoch + 1)
            if clock is not None:
                clock.saved()
    return saved


def test_default_saves_fast_settings_once_and_slow_ones_every_epoch():
    env = _env()
    assert env.spec.checkpoint.min_interval_s == 30
    assert _saved(env, CheckpointClock(), seconds_per_epoch=0.1) == [6]  # the last only
    assert _saved(env, CheckpointClock(), seconds_per_epoch=40) == [1, 2, 3, 4, 5, 6]
    assert _saved(env, CheckpointClock(), seconds_per_epoch=12) == [3, 6]  # 36 s, then 36 s


def test_every_k_epochs_without_a_minimum_interval():
    env = _env(every_epochs=4, min_interval_s=0)
    assert _saved(env, CheckpointClock(), seconds_per_epoch=0.1) == [4, 6]
    assert _saved(env, None, seconds_per_epoch=0.1) == [4, 6]  # no clock: by epochs alone
    assert _saved(_env(every_epochs=2, min_interval_s=0), None, 0.1) == [2, 4, 6]
