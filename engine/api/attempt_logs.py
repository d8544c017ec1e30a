"""Reading a run's attempt logs, whole or from a cursor (what ``sluice logs --follow`` polls with).

A cursor is where each attempt's log was read up to, in bytes: the next read returns only what
was written since, whatever happened to the other attempts in between (a retry, a fan-out item
started late, a header appearing). Tracking the printed text by length, as the follower once did,
breaks as soon as any of those moves text around. The cursor is opaque to clients: they send back
the ``Sluice-Log-Cursor`` header of the previous answer as ``?after=``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: at most this much of one attempt's log per answer (its end: the newest lines)
MAX_LOG_BYTES = 1024 * 1024

Cursor = dict[str, int]


class BadCursor(ValueError):
    pass


def encode_cursor(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(json.dumps(cursor, separators=(",", ":")).encode()).decode()


def decode_cursor(text: str) -> Cursor:
    try:
        value = json.loads(base64.urlsafe_b64decode(text.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in value.items()
    ):
        raise BadCursor("after= must be the Sluice-Log-Cursor header of an earlier answer, unchanged")
    return value


def _key(att: dict[str, Any]) -> str:
    return f"{att['step']}[{'' if att['index'] is None else att['index']}]#{att['attempt']}"


def _complete_utf8(data: bytes) -> int:
    """The length of ``data`` without a UTF-8 character cut off at its end (read it next time)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:  # ASCII: nothing cut
            return len(data)
        if byte >= 0xC0:  # the lead byte of the last character: is the character whole?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)


def read_logs(
    data_dir: Path,
    attempts: list[dict[str, Any]],
    *,
    tail: int | None = None,
    single: bool = False,
    live: dict[str, str] | None = None,
    after: Cursor | None = None,
) -> tuple[str, Cursor]:
    """The attempts' logs (from ``after``, or whole) and the cursor for the next read.

    ``live`` maps the log path of a running function attempt to its worker's scratch file (the
    log file is written when the attempt ends, with the same bytes). A header names each attempt
    the first time it is printed, unless one attempt of one step was asked for (``single``).
    """
    root, out, cursor = Path(data_dir).resolve(), [], dict(after or {})
    headers = not single or len(attempts) > 1
    mid_line = False  #: the text so far ends inside a line (a header then needs a newline first)
    for att in attempts:
        if not att["log_path"]:
            continue
        path = Path(att["log_path"]).resolve()
        if not path.is_relative_to(root):  # the store is trusted, but a path is still refused outside
            log.warning("refusing log path outside the data dir: %s", path)
            continue
        if not path.exists() and att["log_path"] in (live or {}):
            path = Path((live or {})[att["log_path"]])  # the worker's scratch file: ours, not the store's
        key = _key(att)
        start = cursor.get(key, 0)
        try:
            with path.open("rb") as fh:
                size = fh.seek(0, 2)
                skip = max(start, size - MAX_LOG_BYTES)
                fh.seek(skip)
                data = fh.read(size - skip)
        except FileNotFoundError:
            skip, data = start, b""
        data = data[: _complete_utf8(data)]
        text = data.decode("utf-8", "replace")
        if skip > start and after is not None:
            text = f"[... {skip - start} bytes skipped ...]\n{text}"
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-tail:])
        if headers and key not in cursor:
            index = "" if att["index"] is None else f"[{att['index']}]"
            # no status here: it changes as the attempt ends, and a header is printed only once
            lead = "\n" if after is not None and mid_line else ""
            text = f"{lead}==> {att['step']}{index} attempt {att['attempt']} <==\n{text}"
        cursor[key] = skip + len(data)
        out.append(text)
        if text:
            mid_line = not text.endswith("\n")
    if after is None:  # a whole read ends each attempt's part with a newline; a follow prints bytes
        return "".join(p if p.endswith("\n") or not p else p + "\n" for p in out), cursor
    return "".join(out), cursor
