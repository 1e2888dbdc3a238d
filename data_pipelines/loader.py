"""The epoch-shaped wrapper around ``DALIGenericIterator`` that trainers iterate.

Each ``iter()`` is one epoch of exactly ``len()`` batches on every shard:

- val: readers with ``pad_last_batch=True`` under ``LastBatchPolicy.PARTIAL``: every shard
  takes ``ceil(ceil(N / num_shards) / batch_size)`` batches and the padding DALI adds is
  cut off, so the shards together see every sample exactly once (a shard's last batch
  can be smaller, even empty);
- train: the same DALI epoch, of which the first ``(N // num_shards) // batch_size``
  batches (always full) are yielded and the rest (at most one batch) is read and
  dropped, so DALI's shard rotation and padding stay in step. (``LastBatchPolicy.DROP``
  with rotating shards let a padded batch leak into the next epoch.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["DaliLoader"]

log = logging.getLogger(__name__)


class DaliLoader:
    """Iterable of ``convert(batch_dict)`` over one DALI pipeline, one epoch per ``iter()``.

    ``steps`` caps the batches yielded per epoch (train); default: the whole DALI epoch.
    """

    def __init__(
        self,
        pipe: Any,
        *,
        output_map: list[str],
        steps: int | None = None,
        convert: Callable[[dict[str, torch.Tensor]], Any],
        on_error: Callable[[Exception], Exception] | None = None,
    ) -> None:
        from nvidia.dali.plugin.base_iterator import LastBatchPolicy
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        self._on_error = on_error
        try:
            pipe.build()
            self._it = DALIGenericIterator(
                [pipe],
                output_map,
                reader_name="Reader",
                last_batch_policy=LastBatchPolicy.PARTIAL,
                auto_reset=False,
            )
        except RuntimeError as exc:
            raise self._explain(exc) from exc
        self._convert = convert
        self._len = len(self._it) if steps is None else min(steps, len(self._it))
        self._pending = False  # an epoch was started and not finished
        self.batch_size = pipe.max_batch_size

    def _explain(self, exc: Exception) -> Exception:
        if self._on_error is None:
            return exc
        return self._on_error(exc)

    def __len__(self) -> int:
        return self._len

    def _next(self) -> dict[str, torch.Tensor] | None:
        try:
            return next(self._it)[0]
        except StopIteration:
            return None
        except RuntimeError as exc:
            raise self._explain(exc) from exc

    def __iter__(self) -> Iterator[Any]:
        if self._pending:  # the last epoch was abandoned: finish it so this one starts clean
            while self._next() is not None:
                pass
            self._it.reset()
        self._pending = True
        for _ in range(self._len):
            batch = self._next()
            if batch is None:
                break
            yield self._convert(batch)
        while self._next() is not None:  # let DALI reach the end of its epoch
            pass
        self._it.reset()
        self._pending = False


def classify_batch(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images float NCHW, labels int64 [N])`` from a DALI batch dict."""
    return batch["images"], batch["labels"].reshape(-1).long()
