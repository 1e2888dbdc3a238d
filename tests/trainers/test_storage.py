"""Storage locations for Ray Train checkpoints: URIs and plain paths in the spec, the
service-wide default, and clear errors for a bucket that does not exist or credentials that
are missing or wrong, checked against a real S3-compatible server (moto's server mode on
127.0.0.1; with signature checks on for the credentials case)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from trainers.spec import ExperimentSpec
from trainers.storage import (
    StorageError,
    check_data_root,
    check_storage,
    checkpoint_uri,
    parse_storage,
    resolve_storage,
)


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


def test_missing_or_wrong_credentials_fail_before_any_work(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from moto_server import start_moto

    # moto checks signatures after its first unauthenticated action (the bucket's creation)
    proc, url = start_moto(workdir / "moto.log", INITIAL_NO_AUTH_ACTION_COUNT="1")
    try:
        boto3.client(
            "s3", endpoint_url=url, region_name="us-east-1",
            aws_access_key_id="admin", aws_secret_access_key="admin",
        ).create_bucket(Bucket="ckpt")  # fmt: skip
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to find
        uri = f"s3://ckpt/runs?endpoint_override={url.removeprefix('http://')}&scheme=http"
        with pytest.raises(StorageError, match="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"):
            check_storage(uri)  # none at all
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        with pytest.raises(StorageError, match="'ckpt'.*ACCESS_DENIED"):
            check_storage(uri)

        from trainers.launch import PreflightError, run_experiment

        spec = ExperimentSpec(name="nocreds", storage_path=uri)
        with pytest.raises(PreflightError, match="storage_path 's3://ckpt/runs"):
            run_experiment(spec, job_id="nocreds")
        assert not (workdir / "bioprop-runs" / "mlflow.db").exists()  # nothing was started
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_checkpoint_path_reported_without_scheme_gets_it_back() -> None:
    # Ray Train's Checkpoint.path (and Tune's checkpoint_path) on S3: bucket/prefix/...
    storage = "s3://ckpt/runs?endpoint_override=10.0.0.7:5000&scheme=http"
    assert checkpoint_uri(storage, "ckpt/runs/job/checkpoint_000001") == (
        "s3://ckpt/runs/job/checkpoint_000001?endpoint_override=10.0.0.7:5000&scheme=http"
    )
    assert checkpoint_uri("gs://b/p", "b/p/x") == "gs://b/p/x"
    assert checkpoint_uri("s3://ckpt/runs", "s3://ckpt/runs/x") == "s3://ckpt/runs/x"
    assert checkpoint_uri("/shared/runs", "/shared/runs/x") == "/shared/runs/x"
    assert checkpoint_uri("file:///shared/runs", "/shared/runs/x") == "file:///shared/runs/x"


def test_storage_paths_are_decoded_once_and_normalised(tmp_path: Path) -> None:
    assert parse_storage(f"file://{tmp_path}/a/%2e%2e/b").canonical == str(tmp_path / "b")
    assert parse_storage(f"local://{tmp_path}/a/..%2fc").canonical == str(tmp_path / "c")
    assert parse_storage("s3://ckpt/runs/%6aob").canonical == "s3://ckpt/runs/job"
    assert parse_storage("s3://ckpt/x?endpoint_override=h:1").query == "endpoint_override=h:1"
    for bad in ("s3:///x", "s3://../../etc", "s3://b/a/%2e%2e/c", "s3://k:s@b/x", "file://h/x"):
        with pytest.raises(ValueError):
            parse_storage(bad)
    with pytest.raises(ValueError, match="'%'"):
        parse_storage(f"file://{tmp_path}/%252e%252e")  # no second decoding downstream


def test_data_root_is_checked_again_before_reading(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    env = {"BIOPROP_DATA_ROOT": str(tmp_path / "real"), "BIOPROP_DATA_DIRS": str(tmp_path)}
    check_data_root(tmp_path / "link", env)  # as admitted
    check_data_root(tmp_path / "link", {})  # outside the service: nothing to compare
    (tmp_path / "link").unlink()
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(StorageError, match="now resolves to '/etc'"):
        check_data_root(tmp_path / "link", env)
