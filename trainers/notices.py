"""Warnings and errors of a setting's own processes, marked so the console shows them.

A ``bioprop run`` sends everything Ray, Tune, Train and MLflow print to a log file
(:mod:`service.quiet`); what a researcher must still see is a real warning or error, with
the setting it belongs to. :func:`install`, called in a Tune trial and in every Ray Train
worker of a setting, writes each such record once more to the process's stderr as one
line::

    [bioprop-notice] WARNING [fa lr=0.1] /path/to/file.py:12: UserWarning: the text

Ray forwards a worker's stderr to its driver (``log_to_driver``), where
:func:`parse_notice` finds the line again. Which records: Python ``warnings`` (through
``logging.captureWarnings``), bioprop's log records (:data:`OURS`) at WARNING and above, any logger's
records at ERROR and above; only the first line of each message.
"""

from __future__ import annotations

import logging
import re
import sys

__all__ = [
    "MARK",
    "NoticeHandler",
    "install",
    "installed",
    "notice_line",
    "parse_notice",
    "uninstall",
]

MARK = "[bioprop-notice]"
#: bioprop's loggers: ``bioprop.*`` and the modules' own (``logging.getLogger(__name__)``)
OURS = ("bioprop", "trainers", "service", "data_pipelines")
_NOTICE = re.compile(re.escape(MARK) + r" (?P<level>[A-Z]+) \[(?P<setting>[^\]]*)\] (?P<text>.*)")


def notice_line(level: str, setting: str, text: str) -> str:
    """The marked line of one record (``text``: its first line only)."""
    first = (text.strip().splitlines() or [""])[0].strip()
    return f"{MARK} {level} [{setting}] {first}"


def parse_notice(line: str) -> tuple[str, str, str] | None:
    """``(level, setting, text)`` of a marked line (anywhere in ``line``: Ray prefixes a
    forwarded line with its process, ``(RayTrainWorker pid=...)``), else None."""
    found = _NOTICE.search(line)
    if found is None:
        return None
    return found["level"], found["setting"], found["text"].rstrip()


def shown(record: logging.LogRecord) -> bool:
    """Whether a record is one the console shows: ERROR and above from any logger, WARNING
    and above from bioprop's loggers (:data:`OURS`) and from Python's ``warnings`` (``py.warnings``)."""
    if record.levelno >= logging.ERROR:
        return True
    return record.levelno >= logging.WARNING and (
        record.name == "py.warnings" or record.name.split(".")[0] in OURS
    )


class NoticeHandler(logging.Handler):
    """Writes :func:`shown` records of one setting to stderr as marked lines."""

    def __init__(self, setting: str) -> None:
        super().__init__(logging.WARNING)
        self.setting = setting

    def emit(self, record: logging.LogRecord) -> None:
        if not shown(record):
            return
        try:
            sys.stderr.write(
                notice_line(record.levelname, self.setting, record.getMessage()) + "\n"
            )
            sys.stderr.flush()
        except Exception:  # a closed stream must not fail the setting
            pass


def install(setting: str) -> None:
    """Mark this process's warnings and errors as ``setting``'s (replaces an earlier call's
    handler: Ray may reuse a process)."""
    uninstall()
    logging.getLogger().addHandler(NoticeHandler(setting))
    logging.captureWarnings(True)


def uninstall() -> None:
    """Stop marking this process's records (a driver that trained a setting itself)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, NoticeHandler):
            root.removeHandler(handler)


def installed() -> bool:
    """Whether this process marks its records (they reach a quiet console as notices)."""
    return any(isinstance(h, NoticeHandler) for h in logging.getLogger().handlers)
