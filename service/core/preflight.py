"""Start-up checks of the services a cluster control plane depends on.

``bioprop serve`` refuses to start, with one line per problem, when the Ray dashboard of
``BIOPROP_RAY_JOBS_URL`` does not answer its Jobs API (or refuses the token), the MLflow
server of the tracking URI does not answer ``/health`` (or answers ``403 Invalid Host
header``: its ``--allowed-hosts`` lacks the name used here), or ``BIOPROP_STORAGE_PATH``
names a bucket that does not exist or cannot be listed with the credentials at hand. Jobs
are never lost by a refused start: the job store is untouched.
"""

from __future__ import annotations

import httpx

from service.core.settings import Settings

__all__ = ["check_mlflow", "one_line", "preflight"]

TIMEOUT_S = 10.0


def check_mlflow(uri: str) -> str | None:
    """A problem with the MLflow server at ``uri`` (http/https only), or None."""
    if not uri.startswith(("http://", "https://")):
        return None
    url = uri.rstrip("/") + "/health"
    from service.core.admission import mask_uri

    shown = mask_uri(uri)  # messages name the server, never its credentials
    try:
        response = httpx.get(url, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        return f"MLflow server at {shown} is unreachable ({type(exc).__name__}: {exc})"
    if response.status_code == 403 and "host" in response.text.lower():
        return (
            f"MLflow server at {shown} refused this Host ({response.text.strip()[:200]}): start it "
            "with --allowed-hosts naming the host and port clients use"
        )
    if response.status_code != 200:
        return f"MLflow server at {shown} answered {response.status_code} on /health"
    return None


def preflight(settings: Settings) -> list[str]:
    """Every problem found with the Ray Jobs API, the MLflow server and the storage path."""
    problems = []
    if settings.RAY_JOBS_URL:
        from service.backends.ray_jobs import RayJobs, RayJobsError

        try:
            RayJobs(settings).check()
        except RayJobsError as exc:
            problems.append(str(exc))
    mlflow = check_mlflow(settings.MLFLOW_URI)
    if mlflow:
        problems.append(mlflow)
    if settings.STORAGE_PATH:
        from trainers.storage import StorageError, check_storage

        try:
            check_storage(settings.STORAGE_PATH)
        except StorageError as exc:
            problems.append(f"BIOPROP_STORAGE_PATH: {exc}")
    return [one_line(p) for p in problems]


def one_line(problem: str) -> str:
    """``problem`` on one line: the messages of Ray, httpx and pyarrow span several."""
    return " ".join(problem.split())
