"""The quiet console of ``bioprop run`` without Ray: what reaches the screen and what only
the log file (:mod:`service.quiet`, :mod:`trainers.notices`), and the plain progress lines
of output that is not a terminal (:func:`service.tables.progress_lines`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from service.tables import progress_lines
from trainers.notices import notice_line, parse_notice

SCRIPT = textwrap.dedent(
    """
    import logging, os, subprocess, sys, warnings
    from service.quiet import QuietConsole
    from service.tables import console, err
    from trainers.notices import notice_line

    console.print("bioprop's own line")
    verbose = len(sys.argv) > 2
    with QuietConsole(__import__("pathlib").Path(sys.argv[1]), [console, err], verbose=verbose):
        console.print("the live table")
        print("(TrainController pid=1) Requesting resources")  # Ray, forwarded
        os.write(2, b"core_worker.cc:2465: an internal C++ line\\n")
        logging.getLogger("ray.tune").warning("a Tune tip")  # another layer's warning
        logging.getLogger("mlflow.store").info("Creating initial MLflow database tables")
        # a child process (a local Ray cluster's) writes to the same file
        subprocess.run([sys.executable, "-c", "print('Checkpoint successfully created')"])
        for rank in (0, 1):  # the same warning from two ranks of one setting
            line = notice_line("WARNING", "fa lr=0.1", "x.py:3: UserWarning: look\\nmore")
            print(f"(RayTrainWorker pid={rank}) " + line, file=sys.stderr, flush=True)
        logging.getLogger("trainers.sweep").warning("a bioprop warning")
        logging.getLogger("trainers.sweep").warning("a bioprop warning")
        warnings.warn("a driver-side warning")
    console.print("after")
    """
)


def _run(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    log = tmp_path / "runs" / "run.log"
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    return done, log


def test_verbose_shows_every_line_of_the_log_too(tmp_path: Path):
    done, log = _run(tmp_path, "--verbose")
    for internal in ("Requesting resources", "core_worker", "Tune tip", "Checkpoint successfully"):
        assert internal in done.stdout and internal in log.read_text()


def test_only_bioprop_lines_and_each_warning_once_reach_the_console(tmp_path: Path):
    done, log = _run(tmp_path)
    screen = done.stdout + done.stderr
    for line in ("bioprop's own line", "the live table", "after"):
        assert line in done.stdout
    for internal in ("Requesting resources", "core_worker", "Tune tip", "MLflow database"):
        assert internal not in screen
        assert internal in log.read_text()
    assert "Checkpoint successfully created" in log.read_text()
    assert "\x1b" not in screen  # not a terminal: no control characters
    # each once, on one line; the marked ones come from the log, a moment later
    warned = sorted(line for line in done.stderr.splitlines() if line.startswith("warning"))
    assert len(warned) == 3, done.stderr
    assert warned[0] == "warning [fa lr=0.1]: x.py:3: UserWarning: look"
    assert warned[1].startswith("warning: <string>:")
    assert warned[1].endswith(": UserWarning: a driver-side warning")
    assert warned[2] == "warning: a bioprop warning"


def test_a_notice_survives_rays_prefix_and_colours():
    line = "\x1b[36m(RayTrainWorker pid=9)\x1b[0m " + notice_line("ERROR", "bp", "boom\ntrace")
    assert parse_notice(line) == ("ERROR", "bp", "boom")
    assert parse_notice("(RayTrainWorker pid=9) Reporting training result 1") is None


def test_progress_lines_say_each_setting_epoch_once():
    job = {
        "spec": {"schedule": {"epochs": 3}},
        "progress": {
            "children": [
                {"setting": "bp", "status": "RUNNING", "metrics": {"epoch": 1, "val_acc": 0.5}},
                {"setting": "fa", "status": "RUNNING", "metrics": {}},
            ]
        },
    }
    seen: dict = {}
    assert progress_lines(job, seen) == ["bp: epoch 1/3 val accuracy 0.500 angle - RUNNING"]
    assert progress_lines(job, seen) == []  # nothing new
    job["progress"]["children"][0] = {
        "setting": "bp",
        "status": "FINISHED",
        "metrics": {"epoch": 3, "val_acc": 0.9, "align_mean_angle": 0.0},
    }
    assert progress_lines(job, seen) == ["bp: epoch 3/3 val accuracy 0.900 angle 0.0 FINISHED"]
