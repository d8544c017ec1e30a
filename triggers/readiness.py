"""When a file is complete, and reading it: close-write, the quiet period, and the lease probe.

The rule (docs/files.md says it for users):

- **Close-write** (Linux inotify, the default there): a file is complete when a writer closes
  it (``IN_CLOSE_WRITE``) or it is renamed into the folder, *and nobody still has it open for
  writing*. A create event alone never starts the clock: a writer that pauses for minutes
  between two writes is still writing. Only a name that appears with no writer at all (a hard
  link, a file already closed) is read at once on its create event.
- **Quiet period** (no close event: other platforms, ``close_write=False``): complete once its
  size and mtime have not changed for ``stable_s``, *and nobody has it open for writing*.
- **Still open for writing** is asked of the kernel with a read lease: ``F_SETLEASE F_RDLCK``
  fails with ``EAGAIN`` while any process (several writers, a writer that closed one of two
  descriptors, a shell whose children hold the redirection) has the file open for writing.
  The lease is dropped at once, so a writer that opens the file meanwhile waits microseconds,
  and its break signal is set to ``SIGURG`` (ignored by default) instead of ``SIGIO``, which
  would end the process. Where leases cannot be taken (not the file's owner without
  ``CAP_LEASE``, a file system without leases, not Linux), the probe answers "unknown" and the
  close-write / quiet rules above decide alone.

Every read goes through ``triggers.folder`` descriptors, so it never leaves the folder; runs in
worker threads.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import stat
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from triggers.folder import Escape, open_parent
from triggers.s3 import FileFacts, encode_key

_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | os.O_CLOEXEC
_LEASES = sys.platform.startswith("linux")
_F_SETSIG = 10  # F_SETSIG on Linux, for a Python whose fcntl module does not name it

#: ``now``: a close or rename said it is complete; ``created``: a new name appeared (close-write
#: mode); ``quiet``: a quiet period elapsed or a scan found it; ``gone``: it was deleted.
Hint = Literal["now", "created", "quiet", "gone"]


class Writers(Enum):
    NONE = "none"
    SOME = "some"  #: open for writing by some process
    UNKNOWN = "unknown"  #: leases are not available here


@dataclass(frozen=True, slots=True)
class Read:
    facts: FileFacts | None = None
    refused: str | None = None  #: a reason to log; the file is not processed
    absent: bool = False
    wait_s: float | None = None  #: not settled yet (quiet period): look again after this long
    writing: bool = False  #: someone has it open for writing: wait for its close
    links: int = 1  #: hard links to the file (``st_nlink``) when ``writing``
    changed: bool = False  #: written to while it was being hashed
    unchanged: bool = False  #: size and mtime match what was already processed


def writers(fd: int) -> Writers:
    """Whether any process has the file behind ``fd`` (opened read-only) open for writing."""
    if not _LEASES:
        return Writers.UNKNOWN
    import fcntl

    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETSIG", _F_SETSIG), signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return Writers.SOME if exc.errno == errno.EAGAIN else Writers.UNKNOWN
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return Writers.NONE


def read_file(root: Path, rel: str, known: list[Any] | None, hint: Hint, stable_s: float) -> Read:
    """Stat, ask for writers, then hash one file, never through a symlink (a worker thread).

    ``hint`` ``quiet`` waits until the mtime is ``stable_s`` old; ``created`` reads only a
    file nobody is writing (else its writer's close is the signal, see the module docstring).
    """
    try:
        parent, name = open_parent(root, rel)
    except FileNotFoundError:
        return Read(absent=True)
    except Escape as exc:
        return Read(refused=exc.strerror or str(exc))
    except OSError as exc:
        return Read(refused=f"cannot be read: {exc.strerror or exc}")
    try:
        return _read_at(parent, name, rel, known, hint, stable_s)
    finally:
        os.close(parent)


def _read_at(parent: int, name: str, rel: str, known: list[Any] | None, hint: Hint, stable_s: float) -> Read:
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return Read(absent=True)
    if stat.S_ISLNK(st.st_mode):
        return Read(refused="symlink (not followed)")
    if not stat.S_ISREG(st.st_mode):
        return Read(refused="not a regular file")
    if known is not None and [st.st_size, st.st_mtime_ns] == known[:2]:
        return Read(unchanged=True)
    if hint == "quiet":
        age_ns = time.time_ns() - st.st_mtime_ns
        if age_ns < stable_s * 1e9:
            return Read(wait_s=(stable_s * 1e9 - age_ns) / 1e9)
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        return Read(absent=True)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):  # another process holds a write lease
            return Read(writing=True, links=st.st_nlink)
        return Read(refused=f"cannot be read: {exc.strerror or exc}")
    try:
        return _hash_open(fd, rel, hint)
    except OSError as exc:
        return Read(refused=f"cannot be read: {exc.strerror or exc}")
    finally:
        os.close(fd)


def _hash_open(fd: int, rel: str, hint: Hint) -> Read:
    before = os.fstat(fd)
    if not stat.S_ISREG(before.st_mode):
        return Read(refused="not a regular file")
    busy = writers(fd)
    if busy is Writers.SOME:
        return Read(writing=True, links=before.st_nlink)
    if hint == "created" and before.st_nlink < 2 and (busy is Writers.UNKNOWN or before.st_size == 0):
        # a new name with one link and nothing in it yet: its creator's close is still to come (the
        # kernel reports the create a moment before the creator's descriptor counts as a writer)
        return Read(writing=True, links=1)
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with os.fdopen(fd, "rb", buffering=0, closefd=False) as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    after = os.fstat(fd)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or size != after.st_size:
        return Read(changed=True)  # written to while we hashed: its writer's close settles it
    return Read(FileFacts(rel, encode_key(rel), size, after.st_mtime_ns, digest.hexdigest()))
