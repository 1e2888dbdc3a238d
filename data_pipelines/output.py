"""Where prepared data sets are written: a local folder or an object-store prefix.

:class:`Target` puts each file whole or not at all (a local file is written under a
temporary name and renamed; an object is one PUT), so a file that exists is complete, and
:meth:`Target.existing` (one listing) tells an interrupted ``bioprop data prepare`` what it
need not write again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import data_pipelines.objstore as objstore
from data_pipelines.location import is_uri, join_uri

__all__ = ["Target", "for_each"]


class Target:
    """A destination: a folder (created) or an ``s3://bucket/prefix``."""

    def __init__(self, dest: str | Path) -> None:
        self.remote = is_uri(dest)
        self.dest = str(dest).rstrip("/") if self.remote else Path(dest).absolute()

    def __str__(self) -> str:
        return str(self.dest)

    def where(self, rel: str) -> str | Path:
        """The location of ``rel`` under the destination."""
        return join_uri(self.dest, rel) if self.remote else self.dest / rel  # type: ignore[operator, arg-type]

    def check(self) -> None:
        """Before any work: a bucket that is missing or refuses the credentials fails here,
        naming the destination (:class:`data_pipelines.objstore.DataRootError`)."""
        if self.remote:
            objstore.check_bucket(self.dest)  # type: ignore[arg-type]

    def existing(self) -> set[str]:
        """Every file already under the destination, relative to it."""
        if self.remote:
            return set(objstore.list_files(self.dest))  # type: ignore[arg-type]
        root = Path(self.dest)
        if not root.is_dir():
            return set()
        found = set()
        for folder, _, files in os.walk(root):
            rel = Path(folder).relative_to(root)
            found.update(str(rel / f) if str(rel) != "." else f for f in files)
        return {f for f in found if not f.endswith(".partial")}

    def get(self, rel: str) -> bytes:
        """The bytes of the file ``rel`` under the destination."""
        if self.remote:
            return objstore.read_bytes(self.where(rel))  # type: ignore[arg-type]
        return Path(self.where(rel)).read_bytes()

    def put(self, rel: str, data: bytes) -> None:
        """Write ``data`` at ``rel`` atomically."""
        if self.remote:
            objstore.write_bytes(self.where(rel), data)  # type: ignore[arg-type]
            return
        path = Path(self.where(rel))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_bytes(data)
        tmp.replace(path)

    def put_file(self, rel: str, local: Path) -> None:
        """Move (or upload) the finished file ``local`` to ``rel`` atomically."""
        if self.remote:
            objstore.upload_file(local, self.where(rel))  # type: ignore[arg-type]
            local.unlink()
            return
        path = Path(self.where(rel))
        path.parent.mkdir(parents=True, exist_ok=True)
        if local.parent == path.parent:
            local.replace(path)
        else:
            shutil.move(local, path)

    def scratch(self, rel: str) -> Path:
        """A local file to build ``rel`` in before :meth:`put_file` (beside it, for a folder)."""
        if self.remote:
            import tempfile

            folder = Path(tempfile.gettempdir()) / "bioprop-prepare"
            folder.mkdir(exist_ok=True)
            return folder / f"{os.getpid()}-{rel.replace('/', '_')}.partial"
        path = Path(self.where(rel))
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(path.name + ".partial")


def for_each(fn: Callable[[Any], None], items: Iterable[Any], *, threads: int = 1) -> None:
    """``fn(item)`` for every item on ``threads`` threads, at most ``threads`` at a time, in
    order; the first error (or Ctrl-C) stops it: nothing more is started, what runs ends."""
    running: set[Future] = set()
    with ThreadPoolExecutor(max(1, threads)) as pool:
        try:
            for item in items:
                while len(running) >= max(1, threads):
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        future.result()
                running.add(pool.submit(fn, item))
            for future in running:
                future.result()
        except BaseException:
            for future in running:
                future.cancel()
            raise
