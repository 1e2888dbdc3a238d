"""Job progress read from MLflow through ``trainers.tracking.job_summary`` (cached).

The import is lazy (MLflow loads on the first read, not when the service starts); answers
are cached for ``ttl`` seconds so status polling stays cheap.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["ProgressReader"]

log = logging.getLogger(__name__)


class ProgressReader:
    """``read(job_id, final=...)`` -> ``job_summary`` dict or None, cached per job."""

    def __init__(self, tracking_uri: str, *, ttl: float = 2.0) -> None:
        self.tracking_uri = tracking_uri
        self.ttl = ttl
        self._cache: dict[str, tuple[float, bool, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def _no_runs_yet(self, job_id: str) -> bool:
        """For a sqlite store: True until the job's parent run exists (read with sqlite3,
        read-only). Opening the store with MLflow before then would race the driver's own
        creation and migration of the schema."""
        if not self.tracking_uri.startswith("sqlite:///"):
            return False
        path = Path(self.tracking_uri.removeprefix("sqlite:///"))
        if not path.exists():
            return True
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
            try:
                row = conn.execute(
                    "SELECT 1 FROM tags WHERE key = 'bioprop.job_id' AND value = ? LIMIT 1",
                    (job_id,),
                ).fetchone()
            finally:
                conn.close()
        except sqlite3.Error:  # no tags table yet, or the driver holds a migration lock
            return True
        return row is None

    MISS: Any = object()

    def cached(self, job_id: str, *, final: bool = False) -> Any:
        """The cached answer, or ``MISS`` when :meth:`read` must ask MLflow."""
        with self._lock:
            hit = self._cache.get(job_id)
        if hit is not None and (hit[1] or time.monotonic() - hit[0] < self.ttl):
            return hit[2]
        return self.MISS

    def read(self, job_id: str, *, final: bool = False) -> dict[str, Any] | None:
        hit = self.cached(job_id, final=final)
        if hit is not self.MISS:
            return hit
        now = time.monotonic()
        if self._no_runs_yet(job_id):
            with self._lock:
                self._cache[job_id] = (now, final, None)
            return None
        from trainers.tracking import job_summary

        try:
            summary = job_summary(job_id, self.tracking_uri)
        except Exception as exc:
            log.warning("job_summary(%s) failed: %s", job_id, exc)
            summary = None
        with self._lock:
            # a finished job's runs no longer change: keep its answer for good
            self._cache[job_id] = (now, final, summary)
        return summary
