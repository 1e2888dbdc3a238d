"""What a driver's environment holds: an allow-list, never the service's own secrets.

A driver runs the training code and everything it imports; whatever is in its environment
that code can read. So it is built, not inherited: :func:`job_env` is what every driver
gets from the service's settings (MLflow URI, storage, data cache and confinement, the job's
owner, the service's ``BIOPROP_PLUGINS``), the same for a local subprocess and a Ray job; :func:`driver_env` adds, for a local
subprocess, the variables of the service's own environment that the allow-list names (the
system's, Python's, Ray's, the accelerators', the cloud and MLflow credentials meant for
training, and ``BIOPROP_DRIVER_ENV``'s extra names). ``BIOPROP_API_TOKENS``, the job store's
URL and any other ``BIOPROP_*`` or database variable are never passed. A Ray job's driver runs
in the Ray node's environment, which has its own credentials; only :func:`job_env` travels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from service.core.settings import Settings
from trainers.plugins import PLUGINS_ENV
from trainers.storage import ENV_DATA_DIRS, ENV_DATA_ROOT

__all__ = ["ALLOWED_NAMES", "ALLOWED_PREFIXES", "OWNER_ENV", "driver_env", "job_env"]

OWNER_ENV = "BIOPROP_USER"  # the driver's MLflow runs carry it as mlflow.user

ALLOWED_NAMES = frozenset(
    {
        # the system and Python
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR",
        "TERM", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONUNBUFFERED", "VIRTUAL_ENV",
        "CONDA_PREFIX", "LD_LIBRARY_PATH", "XDG_CACHE_HOME", "HF_HOME", "TORCH_HOME",
        # MLflow's client (tracking credentials and its artifact store)
        "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
        "MLFLOW_S3_ENDPOINT_URL",
        # cloud credentials meant for training (checkpoint storage)
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
        "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE",
        "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS",
        "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
    }
)  # fmt: skip
ALLOWED_PREFIXES = ("LC_", "RAY_", "CUDA_", "NCCL_", "NVIDIA_", "OMP_", "MKL_", "GLOO_", "DALI_")


def job_env(
    settings: Settings, *, owner: str | None = None, data_root: str | None = None
) -> dict[str, str]:
    """What every driver gets from the service's settings, local or a Ray job; with
    ``data_root`` (data.root as admitted) also it and ``DATA_DIRS``, which the driver checks
    again before reading (:func:`trainers.storage.check_data_root`)."""
    env = {"MLFLOW_TRACKING_URI": settings.MLFLOW_URI}
    if data_root:
        env[ENV_DATA_ROOT] = data_root
        if settings.DATA_DIRS:
            env[ENV_DATA_DIRS] = os.pathsep.join(str(d) for d in settings.DATA_DIRS)
    if settings.STORAGE_PATH:
        env["BIOPROP_STORAGE_PATH"] = settings.STORAGE_PATH
    if settings.DATA_CACHE:
        env["BIOPROP_DATA_CACHE"] = str(settings.DATA_CACHE)
    if owner:
        env[OWNER_ENV] = owner
    if os.environ.get(PLUGINS_ENV):  # the service's plugins: its drivers admit the same names
        env[PLUGINS_ENV] = os.environ[PLUGINS_ENV]
    return env


def driver_env(
    settings: Settings,
    *,
    owner: str | None = None,
    data_root: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A local driver subprocess's whole environment: the allow-listed part of ``environ``
    (default the service's own) and :func:`job_env`."""
    environ = os.environ if environ is None else environ
    extra = set(settings.DRIVER_ENV)
    env = {
        name: value
        for name, value in environ.items()
        if name in ALLOWED_NAMES or name in extra or name.startswith(ALLOWED_PREFIXES)
    }
    if settings.RAY_ADDRESS:
        env["RAY_ADDRESS"] = settings.RAY_ADDRESS
    return env | job_env(settings, owner=owner, data_root=data_root)
