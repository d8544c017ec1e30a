"""Bringing a store file's schema to the version this Sluice knows (engine/store/schema.py).

Each migration is one transaction, so a crash in the middle leaves the previous version whole;
``PRAGMA user_version`` says which ones ran. A file newer than this Sluice is refused, not guessed at.
"""

from __future__ import annotations

import logging
import sqlite3

from engine.store.errors import StoreUnavailable
from engine.store.schema import MIGRATIONS

log = logging.getLogger(__name__)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to the latest version; each migration is one transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreUnavailable(
            f"the store's schema is version {version}, newer than this Sluice knows ({len(MIGRATIONS)}); "
            "upgrade Sluice or point --data-dir at another folder"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("store schema migrated to version %d", number)
    return len(MIGRATIONS)


def statements(script: str) -> list[str]:
    parts, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            parts.append(buf.strip())
            buf = ""
    if buf.strip():
        parts.append(buf.strip())
    return parts
