"""``bioprop run`` stopped by SIGTERM (a batch scheduler's time limit, ``kill``, a node
drain) or Ctrl-C (SIGINT): its MLflow runs are marked KILLED, not left RUNNING, and it says
how to resume. Its console, in a terminal (a pseudo-terminal) or not (pipes, as a batch
job's log), holds bioprop's lines only; Ray's, Tune's and MLflow's are in the run's log file.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.slow

SPEC = {
    "name": "terminated",
    "model": "mlp",
    "data": {"kind": "digits", "image_size": 8},
    "rule": {"name": "fa"},
    "batch_size": 64,
    "schedule": {"epochs": 500},  # far longer than the test waits
    "scale": {"workers": 1},
}


# what Ray, Tune, Train and MLflow print on their own: never on a quiet console
INTERNALS = (
    "TrainController",
    "RayTrainWorker",
    "Reporting training result",
    "Checkpoint successfully created",
    "INFO mlflow",
    "Configuration for experiment",
    "core_worker",
    "tune.py",
    "process group",
)


@contextlib.contextmanager
def _ended(proc: subprocess.Popen) -> Iterator[None]:
    """Kill ``proc`` when the block fails (a test's wait that timed out)."""
    try:
        yield
    except BaseException:
        proc.kill()
        raise


def _stop(proc: subprocess.Popen, sig: int) -> tuple[str, str]:
    """Send ``sig`` and return the command's output once it has ended (killed after 120 s)."""
    proc.send_signal(sig)
    try:
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()


def _wait_for_an_epoch(proc: subprocess.Popen, job_id: str, uri: str) -> None:
    from trainers.tracking import find_job_runs

    deadline = time.monotonic() + 300
    while True:  # until the setting has logged an epoch
        assert proc.poll() is None, "the run ended before its first epoch"
        assert time.monotonic() < deadline, "no epoch logged in 300 s"
        _, children = find_job_runs(job_id, uri)
        if children and children[0].data.metrics.get("epoch", 0) >= 1:
            return
        time.sleep(0.5)


def _assert_quiet(console: str, log: str) -> None:
    leaked = [line for line in console.splitlines() if any(i in line for i in INTERNALS)]
    assert not leaked, leaked
    # Tune's banner and the trial's MLflow lines went to the log (1-worker settings train
    # in their Tune trial: no Ray Train lines)
    assert "Configuration for experiment" in log and "INFO mlflow" in log, log[-3000:]


def test_sigterm_marks_the_runs_killed_and_says_how_to_resume(workdir, ray_cluster):
    from trainers.tracking import default_tracking_uri, find_job_runs

    (workdir / "spec.json").write_text(json.dumps(SPEC))
    uri = default_tracking_uri()
    find_job_runs("term", uri)  # creates the store before the run's first use of it
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "run", "spec.json", "--job-id", "term"],
        cwd=workdir,
        env={**os.environ, "RAY_ADDRESS": ray_cluster},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with _ended(proc):
        _wait_for_an_epoch(proc, "term", uri)
    out, errs = _stop(proc, signal.SIGTERM)
    assert proc.returncode == 143, out + errs
    assert "resume with --job-id term" in errs
    parent, children = find_job_runs("term", uri)
    assert parent.info.status == "KILLED"
    assert [c.info.status for c in children] == ["KILLED"]
    # not a terminal: plain lines, one per setting and epoch, no control characters
    log = workdir / "bioprop-runs" / "runs" / "term" / "run.log"
    assert f"log: {log}" in out
    assert "\x1b" not in out + errs
    # (read every 2 s from MLflow: epochs shorter than that share a line)
    assert re.search(r"^fa: epoch \d+/500 val accuracy 0\.\d{3} angle [\d.]+ \w+$", out, re.M), out
    _assert_quiet(out + errs, log.read_text())


def test_ctrl_c_in_a_terminal_kills_the_runs_and_warnings_show_once(workdir, ray_cluster):
    from trainers.tracking import default_tracking_uri, find_job_runs

    # 2 DDP workers and a global batch they cannot split evenly: each rank warns
    spec = {**SPEC, "name": "interrupted", "batch_size": 65, "scale": {"workers": 2}}
    (workdir / "spec.json").write_text(json.dumps(spec))
    uri = default_tracking_uri()
    find_job_runs("ctrlc", uri)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "run", "spec.json", "--job-id", "ctrlc"],
        cwd=workdir,
        env={**os.environ, "RAY_ADDRESS": ray_cluster, "TERM": "xterm", "COLUMNS": "120"},
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks: list[bytes] = []

    def drain(until: float) -> None:
        while time.monotonic() < until:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the terminal closed: the process ended
                    return
                if not data:
                    return
                chunks.append(data)
            elif proc.poll() is not None:
                return

    try:
        deadline = time.monotonic() + 300
        while True:  # until the setting has logged an epoch, reading the terminal meanwhile
            assert proc.poll() is None and time.monotonic() < deadline, chunks[-20:]
            _, children = find_job_runs("ctrlc", uri)
            if children and children[0].data.metrics.get("epoch", 0) >= 1:
                break
            drain(time.monotonic() + 0.5)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        drain(time.monotonic() + 120)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 130, screen
    assert "resume with --job-id ctrlc" in screen
    parent, children = find_job_runs("ctrlc", uri)
    assert parent.info.status == "KILLED"
    assert [c.info.status for c in children] == ["KILLED"]
    # the warning both ranks raised, once, on one line with its setting
    warned = [line for line in screen.splitlines() if "is not a multiple of" in line]
    assert len(warned) == 1 and "warning [fa]:" in warned[0], warned
    assert "batch_size 65 is not a multiple of scale.workers 2" in warned[0]
    log = (workdir / "bioprop-runs" / "runs" / "ctrlc" / "run.log").read_text()
    _assert_quiet(screen, log)


def _final_model(uri: str, run_id: str) -> dict:
    import torch
    from mlflow import MlflowClient

    folder = MlflowClient(uri).get_run(run_id).data.tags["bioprop.checkpoint"]
    return torch.load(os.path.join(folder, "checkpoint.pt"), weights_only=False)["model"]


def test_one_setting_trains_in_the_command_without_ray_and_resumes_exactly(workdir):
    """A laptop's ``bioprop run`` (no cluster named) of one 1-worker setting trains in the
    command's own process: no Ray started. Ctrl-C between two checkpoints kills it; the same
    job started again continues from the last checkpoint and ends as a run never stopped."""
    import torch
    from mlflow import MlflowClient

    from trainers.tracking import default_tracking_uri, find_job_runs

    spec = {
        **SPEC,
        "name": "here",
        "batch_size": 8,  # epochs of about half a second: the kill lands inside one
        "checkpoint": {"every_epochs": 2, "min_interval_s": 0},
    }
    (workdir / "spec.json").write_text(json.dumps(spec))
    uri = default_tracking_uri()
    find_job_runs("here", uri)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "service.cli", "run", "spec.json"]
    proc = subprocess.Popen(
        [*cmd, "--job-id", "here"], cwd=workdir, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with _ended(proc):
        _wait_for_an_epoch(proc, "here", uri)
        deadline = time.monotonic() + 120
        while True:  # an odd epoch logged: the kill lands after an unsaved epoch
            _, children = find_job_runs("here", uri)
            logged = int(children[0].data.metrics.get("epoch", 0))
            if logged >= 3 and logged % 2:
                break
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
    out, errs = _stop(proc, signal.SIGINT)
    assert proc.returncode == 130, out + errs
    assert "resume with --job-id here" in errs
    log = (workdir / "bioprop-runs" / "runs" / "here" / "run.log").read_text()
    assert "Started a local Ray instance" not in log and "ray_results/here-" not in log
    _, (child,) = find_job_runs("here", uri)
    assert child.info.status == "KILLED"
    stopped = int(child.data.metrics["epoch"])

    target = stopped + 3
    more = ["--set", f"schedule.epochs={target}"]
    again = subprocess.run(
        [*cmd, "--job-id", "here", *more], cwd=workdir, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    whole = subprocess.run(
        [*cmd, "--job-id", "whole", *more], cwd=workdir, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert whole.returncode == 0, whole.stdout + whole.stderr

    client = MlflowClient(uri)
    _, (resumed,) = find_job_runs("here", uri)
    assert resumed.info.run_id == child.info.run_id and resumed.info.status == "FINISHED"
    seams = client.get_metric_history(resumed.info.run_id, "resumed_from_epoch")
    # the last checkpoint (every 2 epochs): the one of the last epoch logged, when the kill
    # came after its save, else the one before (an odd epoch is never saved)
    saved = {stopped - 1} if stopped % 2 else {stopped, stopped - 2}
    assert len(seams) == 1 and seams[0].value in saved, (stopped, seams)
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "train_loss")]
    assert steps == list(range(1, target + 1))  # the epoch trained twice is logged once
    _, (fresh,) = find_job_runs("whole", uri)
    a = _final_model(uri, fresh.info.run_id)
    b = _final_model(uri, resumed.info.run_id)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
