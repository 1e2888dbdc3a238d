"""A quiet console for ``bioprop run`` and ``bioprop demo``: bioprop's lines on screen,
Ray's, Tune's, Train's and MLflow's in a log file.

Inside :class:`QuietConsole` this process's file descriptors 1 and 2 point at the log file
(appending), so everything any layer writes there lands in it: Ray's forwarded worker
output (``log_to_driver``), Tune's banners, MLflow's lines, C++ log lines, and the Python
logging of every library (one root handler, timestamped). Processes started inside (a
local Ray cluster's) inherit the same file. bioprop's rich consoles keep writing to the
terminal (or file) the command was started with.

What still reaches the console, once each, on one line naming its setting: the marked
lines of :mod:`trainers.notices` (warnings and errors raised inside a setting's Tune trial
or Train workers, found by a thread that follows the log file) and, in this process,
records :func:`trainers.notices.shown` accepts. With ``verbose`` every line of the log
also goes to the console, as before this module.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from trainers import notices
from trainers.notices import parse_notice, shown

__all__ = ["QuietConsole"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _ConsoleHandler(logging.Handler):
    """This process's records that :func:`shown` accepts, to the console once each."""

    def __init__(self, quiet: QuietConsole) -> None:
        super().__init__(logging.WARNING)
        self.quiet = quiet

    def emit(self, record: logging.LogRecord) -> None:
        # while this process trains a setting itself, the setting's marked line (in the log)
        # brings the record to the console, with the setting's name
        if shown(record) and not notices.installed():
            self.quiet.notice(record.levelname, "", record.getMessage())


def _console_stream(stream: TextIO, fd: int, saved: int) -> TextIO:
    """Where the console keeps writing: the terminal (or file) behind ``fd`` through its
    saved copy ``saved``, or ``stream`` itself when it is not backed by ``fd`` (a notebook's
    or a test runner's stream)."""
    try:
        if stream.fileno() == fd:
            return os.fdopen(saved, "w", buffering=1, encoding="utf-8", closefd=False)
    except (AttributeError, OSError, ValueError):
        pass
    return stream


class QuietConsole:
    """Context manager: fds 1 and 2 -> ``log_path``; ``consoles`` (rich) -> the original
    stdout (the first) and stderr (the rest). ``poll``: seconds between reads of the log."""

    def __init__(
        self, log_path: Path, consoles: list[Any], *, verbose: bool = False, poll: float = 0.2
    ) -> None:
        self.log_path = Path(log_path)
        self.consoles = consoles
        self.verbose = verbose
        self.poll = poll
        self.seen: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="quiet-console", daemon=True)
        self._saved: list[int] = []
        self._streams: list[TextIO] = []
        self._handlers: list[logging.Handler] = []
        self._start = 0
        self._python_streams: tuple[TextIO, TextIO] = (sys.stdout, sys.stderr)

    # -- the console side ------------------------------------------------------------
    @property
    def err(self) -> TextIO:
        return self._streams[1]

    def notice(self, level: str, setting: str, text: str) -> None:
        """Print a warning or error once: ``warning [setting]: first line``."""
        first = (text.strip().splitlines() or [""])[0].strip()
        key = (level, setting, first)
        with self._lock:
            if key in self.seen or not first:
                return
            self.seen.add(key)
        where = f" [{setting}]" if setting else ""
        try:
            self.err.write(f"{level.lower()}{where}: {first}\n")
            self.err.flush()
        except Exception:
            pass

    # -- set-up and tear-down ----------------------------------------------------------
    def __enter__(self) -> QuietConsole:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._start = os.fstat(fd).st_size
        self._saved = [os.dup(1), os.dup(2)]
        self._streams = [
            _console_stream(sys.stdout, 1, self._saved[0]),
            _console_stream(sys.stderr, 2, self._saved[1]),
        ]
        for i, console in enumerate(self.consoles):
            console.file = self._streams[0 if i == 0 else 1]
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        # Python-level writers (print, Tune's banners, Ray's forwarded lines) follow fds 1
        # and 2 into the log too, also where sys.stdout is not fd 1 (a notebook, CliRunner);
        # line-buffered so lines reach the log (and the follower) as written
        self._python_streams = (sys.stdout, sys.stderr)
        sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, encoding="utf-8", closefd=False)
        root = logging.getLogger()
        to_file = logging.StreamHandler(sys.stderr)  # fd 2: the log file
        to_file.setFormatter(logging.Formatter(LOG_FORMAT))
        self._handlers = [to_file]
        if not self.verbose:
            self._handlers.append(_ConsoleHandler(self))
        for handler in root.handlers[:]:  # basicConfig's, writing to the old stderr object
            root.removeHandler(handler)
        for handler in self._handlers:
            root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()  # before the follower's last read
        sys.stderr.flush()
        self._stop.set()
        self._thread.join(timeout=5)
        root = logging.getLogger()
        for handler in self._handlers:
            root.removeHandler(handler)
        sys.stdout, sys.stderr = self._python_streams
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for console in self.consoles:
            console.file = None  # back to sys.stdout / sys.stderr
        for stream in self._streams:
            stream.flush()
        for fd in self._saved:
            os.close(fd)

    # -- following the log -------------------------------------------------------------
    def _follow(self) -> None:
        with open(self.log_path, "rb") as log:
            log.seek(self._start)
            pending = b""
            while True:
                stopping = self._stop.wait(self.poll)
                chunk = log.read()
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        self._line(line.decode("utf-8", "replace"))
                if stopping:
                    if pending:
                        self._line(pending.decode("utf-8", "replace"))
                    return

    def _line(self, line: str) -> None:
        if self.verbose:
            try:
                self._streams[0].write(line + "\n")
            except Exception:
                pass
            return
        found = parse_notice(line)
        if found is not None:
            self.notice(*found)
