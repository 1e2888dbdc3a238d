"""Fixtures for data_pipelines tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from dp_images import write_id_folder


@pytest.fixture
def id_folder(tmp_path: Path) -> Path:
    """3 classes; train 11 images per class, val 7 per class."""
    return write_id_folder(tmp_path / "ids", classes=3, per_class={"train": 11, "val": 7})
