"""The daemons' log lines: plain text (default) or, with ``MAO_LOG_FORMAT=json``, one JSON object per
line for a log shipper.

A JSON line has ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, and ``run``/``step`` when
the line was written while a run (or one of its steps) was being executed: the runner sets the
``RUN_ID`` and ``STEP`` context variables in its run's task, so every line logged from that task (and
from tasks it starts) carries them without passing ids around. An exception's traceback goes into
``exc`` as one string.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

from aiohttp.http_exceptions import HttpProcessingError

RUN_ID: ContextVar[str | None] = ContextVar("mao_run_id", default=None)
STEP: ContextVar[str | None] = ContextVar("mao_step", default=None)

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (run := RUN_ID.get()) is not None:
            line["run"] = run
        if (step := STEP.get()) is not None:
            line["step"] = step
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def quiet_bad_requests(record: logging.LogRecord) -> bool:
    """aiohttp logs a request it cannot even parse (a NUL in a header, a broken request line) as an
    ERROR with a traceback, after answering it 400. That is the client's fault, not ours: one INFO
    line without a traceback, so a scanner cannot fill the log with tracebacks."""
    if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
        record.msg = "refused a malformed HTTP request (400): %s"
        record.args = (str(record.exc_info[1]).splitlines()[0][:200],)
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info = record.exc_text = None
    return True


def configure(level: str, fmt: str = "text") -> None:
    """Set up the root logger once, writing to stderr in ``fmt`` (``text`` or ``json``)."""
    server_log = logging.getLogger("aiohttp.server")
    if quiet_bad_requests not in server_log.filters:
        server_log.addFilter(quiet_bad_requests)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
