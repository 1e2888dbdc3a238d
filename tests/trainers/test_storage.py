"""Storage locations for Ray Train checkpoints: URIs and plain paths in the spec, the
service-wide default, and clear errors for a bucket that does not exist, checked against a
real S3-compatible server (moto's server mode on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from trainers.spec import ExperimentSpec
from trainers.storage import StorageError, check_storage, resolve_storage


def test_spec_takes_uris_and_paths_and_names_a_bad_scheme(tmp_path: Path) -> None:
    assert ExperimentSpec(storage_path="s3://ckpt/runs").storage_path == "s3://ckpt/runs"
    assert ExperimentSpec(storage_path="gs://b/p").storage_path == "gs://b/p"
    assert ExperimentSpec(storage_path=tmp_path).storage_path == str(tmp_path)
    with pytest.raises(ValidationError, match="storage_path 'ftp://host/x': scheme 'ftp'"):
        ExperimentSpec(storage_path="ftp://host/x")


def test_default_storage_is_the_service_setting_else_the_working_dir(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BIOPROP_STORAGE_PATH", raising=False)
    assert resolve_storage(None) == str(workdir / "bioprop-runs" / "ray_results")
    monkeypatch.setenv("BIOPROP_STORAGE_PATH", "s3://ckpt/runs")
    assert resolve_storage(None) == "s3://ckpt/runs"
    assert resolve_storage("relative") == str(workdir / "relative")  # the spec wins
    assert (workdir / "relative").is_dir()


def test_bucket_checked_before_any_work(s3) -> None:
    check_storage("s3://ckpt/runs/job-1")  # exists: no error, nothing written
    assert "Contents" not in s3.list_objects_v2(Bucket="ckpt")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        check_storage("s3://no-such-bucket/runs")
    with pytest.raises(StorageError, match="cannot be opened"):
        check_storage("s3://ckpt/runs?no_such_option=1")


def test_file_uri_folder_is_created(tmp_path: Path) -> None:
    target = tmp_path / "shared" / "runs"
    check_storage(f"file://{target}")
    assert target.is_dir()
