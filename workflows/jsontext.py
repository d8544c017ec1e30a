"""JSON that comes from outside (webhook bodies, API requests, ``--input``): strict, as RFC 8259.

Python's ``json.loads`` accepts ``NaN`` and ``Infinity``, which no other JSON parser does and which
the store refuses to write (it encodes with ``allow_nan=False``, so every stored document stays
readable by any consumer). Accepting them at the door would fail later, as a server error after the
caller was told nothing useful; refusing them here gives the caller a 4xx that names the fix.
"""

from __future__ import annotations

import json
from typing import Any


class _NotJSON(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _refuse(name: str) -> Any:
    raise _NotJSON(name)


#: built once: ``json.loads`` with a keyword builds a new decoder on every call
_decode = json.JSONDecoder(parse_constant=_refuse).decode


def loads(text: str | bytes) -> Any:
    """``json.loads`` that raises ``json.JSONDecodeError`` for ``NaN``/``Infinity``/``-Infinity``."""
    doc = text.decode("utf-8") if isinstance(text, bytes) else text
    try:
        return _decode(doc)
    except _NotJSON as exc:
        raise json.JSONDecodeError(
            f"{exc.name} is not JSON (use null, a number or a string)", doc, max(doc.find(exc.name), 0)
        ) from None
