"""``data.root`` as an object-store prefix: kept as its canonical URI (never folded by
``pathlib`` into ``s3:/...``), refused with the reason when it is no usable URI, and admitted
by the service only when its scheme is enabled."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from data_pipelines.spec import DataSpec
from trainers.spec import ExperimentSpec


def test_s3_root_is_kept_whole_through_the_spec_and_its_json() -> None:
    spec = ExperimentSpec.model_validate(
        {"data": {"kind": "imagefolder", "root": "s3://datasets/imagenet/%77ds/"}}
    )
    assert spec.data.root == "s3://datasets/imagenet/wds"
    again = ExperimentSpec.model_validate(spec.model_dump(mode="json"))
    assert again.data.root == "s3://datasets/imagenet/wds"
    assert DataSpec(kind="imagefolder", root="/data/imagenet").root == Path("/data/imagenet")


@pytest.mark.parametrize(
    ("root", "reason"),
    [
        ("gs://b/x", "scheme 'gs' is not one the data readers open"),
        ("s3://key:secret@bucket/x", "must name a bucket"),
        ("s3://bucket:9000/x", "must name a bucket"),
        ("s3:///imagenet", "must name a bucket"),
        ("s3://bucket/a/%2e%2e/b", "'.' or '..'"),
        ("s3://bucket/x?endpoint_override=evil:80", "no '\\?' options"),
        ("s3:/lab/imagenet", "one '/' after 's3:'; did you mean 's3://lab/imagenet'"),
    ],
)
def test_bad_uri_is_refused_naming_the_field(root: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason) as info:
        DataSpec(kind="imagefolder", root=root)
    assert info.value.errors()[0]["loc"] == ("root",)


def test_service_admits_an_s3_root_only_with_s3_enabled(tmp_path: Path) -> None:
    from fastapi.exceptions import RequestValidationError

    from service.core.admission import admit
    from service.core.settings import Settings

    spec = ExperimentSpec.model_validate({"data": {"kind": "imagefolder", "root": "s3://data/i"}})
    settings = Settings(DATA_DIRS=[tmp_path], RUN_DIR=tmp_path, MLFLOW_URI="")
    admitted, data_root = admit(spec, settings)
    assert admitted.data.root == "s3://data/i" and data_root is None
    closed = settings.model_copy(update={"STORAGE_SCHEMES": ["file"]})
    with pytest.raises(RequestValidationError, match="data.root scheme 's3' is not enabled"):
        admit(spec, closed)
